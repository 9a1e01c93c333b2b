//! The machinery of config validation: errors that name file, line and key
//! (`ConfigError`), key paths that find their line in the parsed document
//! (`KeyPath`), the `Checker` that collects errors while `validate.rs` builds
//! the `Config`, and the valid keys of each table for "did you mean" hints.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Visitor};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::Secret;
use super::file::*;

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    /// Dotted key path, e.g. `listener[1].role`; empty for the whole file.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn unreadable(path: &Path, err: &std::io::Error) -> ConfigError {
        ConfigError {
            file: Some(path.to_path_buf()),
            line: None,
            key: String::new(),
            message: format!("cannot read the configuration file: {err}"),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}", file.display())?,
            None => write!(f, "built-in configuration")?,
        }
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.key, self.message)
        }
    }
}

/// All the errors of one configuration, in file order.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn single(error: ConfigError) -> ConfigErrors {
        ConfigErrors(vec![error])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Segment {
    Key(String),
    Index(usize),
}

/// A key path inside the document, used both to name a key and to find its line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct KeyPath(Vec<Segment>);

impl KeyPath {
    pub(super) fn key(&self, name: &str) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Segment::Key(name.to_string()));
        p
    }
    pub(super) fn index(&self, i: usize) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Segment::Index(i));
        p
    }
    pub(super) fn from_ignored(path: &serde_ignored::Path<'_>) -> KeyPath {
        use serde_ignored::Path as P;
        match path {
            P::Root => KeyPath::default(),
            P::Seq { parent, index } => KeyPath::from_ignored(parent).index(*index),
            P::Map { parent, key } => KeyPath::from_ignored(parent).key(key),
            P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
                KeyPath::from_ignored(parent)
            }
        }
    }
    /// The name of the table the last key sits in, ignoring array indexes.
    pub(super) fn parent_table(&self) -> Option<&str> {
        self.0[..self.0.len().saturating_sub(1)]
            .iter()
            .rev()
            .find_map(|s| match s {
                Segment::Key(k) => Some(k.as_str()),
                Segment::Index(_) => None,
            })
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Segment::Key(k) if i == 0 => write!(f, "{k}")?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

pub(super) struct Checker<'a> {
    pub(super) text: &'a str,
    pub(super) file: Option<&'a Path>,
    pub(super) doc: Spanned<DeTable<'a>>,
    pub(super) errors: Vec<ConfigError>,
    /// Whether `existing_file` looks at the file.
    pub(super) look_at_files: bool,
}

impl<'a> Checker<'a> {
    pub(super) fn line_of_offset(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    /// The line of the key (or array element) at `path`, when the document has it.
    pub(super) fn line_of(&self, path: &KeyPath) -> Option<usize> {
        let mut table: &DeTable<'_> = self.doc.get_ref();
        let mut value: Option<&Spanned<DeValue<'_>>> = None;
        let mut span = None;
        for seg in &path.0 {
            match seg {
                Segment::Key(k) => {
                    let (key, v) = table.iter().find(|(key, _)| key.get_ref() == k)?;
                    span = Some(key.span());
                    value = Some(v);
                }
                Segment::Index(i) => {
                    let item = value?.get_ref().as_array()?.get(*i)?;
                    span = Some(item.span());
                    value = Some(item);
                }
            }
            if let Some(t) = value.and_then(|v| v.get_ref().as_table()) {
                table = t;
            }
        }
        span.map(|s| self.line_of_offset(s.start))
    }

    pub(super) fn error(&mut self, path: &KeyPath, message: impl Into<String>) {
        let line = self.line_of(path);
        self.errors.push(ConfigError {
            file: self.file.map(Path::to_path_buf),
            line,
            key: path.to_string(),
            message: message.into(),
        });
    }

    pub(super) fn toml_error(&mut self, err: &toml::de::Error) {
        let line = err.span().map(|s| self.line_of_offset(s.start));
        self.errors.push(ConfigError {
            file: self.file.map(Path::to_path_buf),
            line,
            key: String::new(),
            message: err.message().trim().to_string(),
        });
    }

    /// A number within `min..=max`, or the default.
    pub(super) fn number(
        &mut self,
        path: KeyPath,
        value: Option<u64>,
        default: u64,
        min: u64,
        max: u64,
    ) -> u64 {
        match value {
            None => default,
            Some(v) if (min..=max).contains(&v) => v,
            Some(v) => {
                self.error(
                    &path,
                    format!("{v} is out of range; use a whole number from {min} to {max}"),
                );
                default
            }
        }
    }

    /// `number`, as a duration in seconds.
    pub(super) fn seconds(
        &mut self,
        path: KeyPath,
        value: Option<u64>,
        default: u64,
        min: u64,
        max: u64,
    ) -> std::time::Duration {
        std::time::Duration::from_secs(self.number(path, value, default, min, max))
    }

    pub(super) fn socket_addr(&mut self, path: KeyPath, value: &str) -> Option<SocketAddr> {
        match value.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(
                    &path,
                    format!("{value:?} is not an address with a port; write e.g. \"0.0.0.0:587\" or \"[::]:587\""),
                );
                None
            }
        }
    }

    pub(super) fn existing_file(&mut self, path: KeyPath, value: &str) -> PathBuf {
        let p = PathBuf::from(value);
        if !self.look_at_files {
            return p;
        }
        if let Err(e) = std::fs::metadata(&p) {
            self.error(&path, format!("cannot use {value:?}: {e}"));
        }
        p
    }

    /// The secret in the file `value` names (surrounding whitespace
    /// trimmed): at least 16 characters, so it cannot be guessed by trying.
    pub(super) fn secret_file(&mut self, path: KeyPath, value: &str) -> Option<Secret> {
        if !self.look_at_files {
            return None;
        }
        match std::fs::read_to_string(value) {
            Ok(text) if text.trim().len() >= 16 => Some(Secret(text.trim().to_string())),
            Ok(text) => {
                let n = text.trim().len();
                self.error(&path, format!("{value:?} holds {n} characters; a token needs at least 16 (e.g. `openssl rand -hex 32 > {value}`)"));
                None
            }
            Err(e) => {
                self.error(&path, format!("cannot read {value:?}: {e}"));
                None
            }
        }
    }
}

/// Names of the fields a serde struct accepts, for "valid keys here are" hints.
/// Serde has no reflection; a struct's derived Deserialize hands its field list
/// to `deserialize_struct`, so a deserializer that only records it is enough.
pub(super) fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Introspect<'f>(&'f mut &'static [&'static str]);
    impl<'de> de::Deserializer<'de> for Introspect<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("introspection only"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("introspection only"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
            enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Introspect(&mut fields));
    fields
}

pub(super) fn valid_keys(table: Option<&str>) -> &'static [&'static str] {
    match table {
        None => field_names::<ConfigFile>(),
        Some("listener") => field_names::<ListenerFile>(),
        Some("tls") => field_names::<TlsFile>(),
        Some("limits") => field_names::<LimitsFile>(),
        Some("auth") => field_names::<AuthFile>(),
        Some("smtp") => field_names::<SmtpFile>(),
        Some("delivery") => field_names::<DeliveryFile>(),
        Some("relay" | "fallback_relay") => field_names::<RelayFile>(),
        Some("route") => field_names::<RouteFile>(),
        Some("http") => field_names::<HttpFile>(),
        Some("store") => field_names::<StoreFile>(),
        Some("local") => field_names::<LocalFile>(),
        // `[[local.domain]]`: the only table of that name.
        Some("domain") => field_names::<LocalDomainFile>(),
        Some("sendmail") => field_names::<SendmailFile>(),
        Some("acme") => field_names::<AcmeFile>(),
        Some("dkim") => field_names::<DkimFile>(),
        Some("filter") => field_names::<FilterFile>(),
        Some(_) => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example configuration (`postern.example.toml`, installed as
    /// /etc/postern/postern.toml) shows every key, set or commented out, in
    /// its section: a new key that is not documented there fails here.
    #[test]
    fn the_example_configuration_shows_every_key() {
        let example = include_str!("../../postern.example.toml");
        let mut missing = Vec::new();
        let mut section = None;
        let mut seen: Vec<(Option<String>, String)> = Vec::new();
        for line in example.lines() {
            let line = line.trim_start_matches('#').trim();
            if let Some(name) = line.strip_prefix('[') {
                // `[[local.domain]]` is the table valid_keys calls "domain".
                let name = name.trim_start_matches('[');
                let name = name.split(']').next().unwrap_or(name);
                section = Some(name.rsplit('.').next().unwrap_or(name).to_string());
            } else if let Some((key, _)) = line.split_once(" = ") {
                seen.push((section.clone(), key.trim().to_string()));
            }
        }
        let tables = [
            None,
            Some("listener"),
            Some("tls"),
            Some("limits"),
            Some("auth"),
            Some("smtp"),
            Some("delivery"),
            Some("relay"),
            Some("fallback_relay"),
            Some("route"),
            Some("http"),
            Some("store"),
            Some("local"),
            Some("domain"),
            Some("sendmail"),
            Some("acme"),
            Some("dkim"),
            Some("filter"),
        ];
        for table in tables {
            for key in valid_keys(table) {
                // Sections ([tls], [[local.domain]]) are checked through their keys.
                let section = !valid_keys(Some(key)).is_empty();
                let documented = seen.iter().any(|(s, k)| s.as_deref() == table && k == key);
                if !section && !documented {
                    missing.push(format!(
                        "{}{key}",
                        table.map_or(String::new(), |t| format!("[{t}] "))
                    ));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "not in postern.example.toml: {missing:?}"
        );
    }
}
