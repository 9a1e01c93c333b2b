//! `postern config check`: validate a configuration and explain every error.

use std::io::Write;

use super::ConfigArg;

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file and list every error in it.
    Check,
}

pub fn run(cmd: ConfigCommand, config: &ConfigArg) -> anyhow::Result<()> {
    let ConfigCommand::Check = cmd;
    match config.try_load() {
        Ok(c) => {
            // As `serve` would find them: a pair that does not read, or a
            // key that is not the certificate's, fails here, not at start.
            if let Some(files) = &c.tls {
                use crate::tls::certificates;
                let key = certificates::read(files)?;
                if let Some(date) = certificates::expired_on(&key, crate::clock::now_unix()) {
                    anyhow::bail!(
                        "{}: the certificate expired on {date}; renew it",
                        files.cert.display()
                    );
                }
            }
            let name = c
                .source
                .as_ref()
                .map_or("the built-in defaults".to_string(), |p| {
                    p.display().to_string()
                });
            writeln!(std::io::stdout(), "{name}: ok")?;
            Ok(())
        }
        Err(errors) => {
            let n = errors.0.len();
            anyhow::bail!("{errors}\n{n} error{} found", if n == 1 { "" } else { "s" })
        }
    }
}
