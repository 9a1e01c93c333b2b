//! `postern sendmail` (and the binary run as `sendmail`): sendmail's command
//! line for programs (PHP's mail(), cron, scripts). Reads the message from
//! standard input and hands it to the running server over its submission
//! socket (`crate::sendmail`); `-bs` speaks SMTP on standard input and
//! output (`sendmail/smtp.rs`), `-bv` checks addresses without sending.
//!
//! Exit codes are sendmail's (sysexits.h, [`Sysexit`]), not the CLI's
//! 0/1/2: the programs that call sendmail read them so, 75 as "try again".

mod smtp;

use std::io::Write;
use std::path::PathBuf;

use super::ConfigArg;
use crate::config::Config;
use crate::sendmail::input::{Dots, extract_recipients, read_message};
use crate::sendmail::{Answer, Envelope, Sysexit, client};

/// sendmail's arguments, read by hand (`parse`): its flags are single
/// letters that take their value attached or as the next argument
/// (`-fADDR`, `-f ADDR`), and clap's rules for those differ.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// sendmail's options and recipients: [-t] [-i] [-f ADDR] [-F NAME]
    /// [-bm|-bs|-bv] [-v] [ADDR...]; other sendmail options are ignored.
    #[arg(
        allow_hyphen_values = true,
        trailing_var_arg = true,
        value_name = "ARGS"
    )]
    args: Vec<String>,
}

impl Args {
    /// The arguments of a binary invoked as `sendmail`.
    pub fn from_argv(args: Vec<String>) -> Args {
        Args { args }
    }
}

/// A failure, with the exit status sendmail would give it.
#[derive(Debug, thiserror::Error)]
#[error("sendmail: {message}")]
pub struct Failed {
    pub status: Sysexit,
    message: String,
}

fn failed(status: Sysexit, message: impl Into<String>) -> anyhow::Error {
    Failed {
        status,
        message: message.into(),
    }
    .into()
}

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `-bm`, the default: deliver the message on standard input.
    Deliver,
    /// `-bs`: SMTP on standard input and output.
    Smtp,
    /// `-bv`: say whether each address would be accepted.
    Verify,
}

#[derive(Debug, PartialEq, Eq)]
struct Options {
    mode: Mode,
    /// `-t`: recipients from To:, Cc: and Bcc: too.
    extract: bool,
    dots: Dots,
    sender: Option<String>,
    full_name: Option<String>,
    verbose: bool,
    config: Option<PathBuf>,
    addresses: Vec<String>,
}

/// sendmail's options that take a value (Postfix's getopt string
/// `A:B:C:F:GIL:N:O:R:UV:X:b:ce:f:h:imno:p:r:q:tvx`, less -q, which runs the
/// queue); of these only -F, -f (and its old name -r), -b and -o i mean
/// something here.
const WITH_VALUE: &str = "ABCFLNORVXbefhopr";
/// Those that take none; of these -t, -i and -v mean something here.
const FLAGS: &str = "GIUcimntvx";

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        mode: Mode::Deliver,
        extract: false,
        dots: Dots::EndMessage,
        sender: None,
        full_name: None,
        verbose: false,
        config: None,
        addresses: Vec::new(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            o.addresses.extend(args.by_ref().cloned());
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            match long.split_once('=') {
                Some(("config", path)) => o.config = Some(path.into()),
                None if long == "config" => {
                    o.config = Some(args.next().ok_or("--config needs a file")?.into());
                }
                _ => return Err(format!("unknown option {arg}")),
            }
            continue;
        }
        let Some(letters) = arg.strip_prefix('-').filter(|l| !l.is_empty()) else {
            o.addresses.push(arg.clone());
            continue;
        };
        // getopt: flags may be grouped (-ti); a letter that takes a value
        // takes the rest of the argument, or the next one.
        for (i, letter) in letters.char_indices() {
            if WITH_VALUE.contains(letter) {
                let rest = &letters[i + letter.len_utf8()..];
                let value = if rest.is_empty() {
                    args.next()
                        .ok_or(format!("option -{letter} needs a value"))?
                        .clone()
                } else {
                    rest.to_string()
                };
                o.value(letter, value)?;
                break;
            }
            match letter {
                'q' => {
                    return Err(
                        "-q: this sendmail does not run the queue; use `postern queue retry --all`"
                            .into(),
                    );
                }
                't' => o.extract = true,
                'i' => o.dots = Dots::AreText,
                'v' => o.verbose = true,
                c if FLAGS.contains(c) => {}
                c => return Err(format!("unknown option -{c}")),
            }
        }
    }
    Ok(o)
}

impl Options {
    fn value(&mut self, letter: char, value: String) -> Result<(), String> {
        match letter {
            'f' | 'r' => self.sender = Some(value),
            'F' => self.full_name = Some(value),
            // -oi: as -i; every other -o option is sendmail's own setting.
            'o' if value == "i" => self.dots = Dots::AreText,
            'b' => {
                self.mode = match value.as_str() {
                    "m" => Mode::Deliver,
                    "s" => Mode::Smtp,
                    "v" => Mode::Verify,
                    other => {
                        return Err(format!(
                            "-b{other} is not supported; this sendmail delivers (-bm), speaks SMTP (-bs) or verifies (-bv)"
                        ));
                    }
                };
            }
            _ => {}
        }
        Ok(())
    }
}

pub async fn run(args: Args, config: &ConfigArg) -> anyhow::Result<()> {
    let options = parse(&args.args).map_err(|e| failed(Sysexit::Usage, e))?;
    let config = match &options.config {
        Some(path) => ConfigArg {
            config: Some(path.clone()),
        },
        None => ConfigArg {
            config: config.config.clone(),
        },
    }
    // Only the settings: the files it names (the server's key, say) are
    // the server's to read, and the caller may not be allowed to see them.
    .load_settings_with(Config::load_settings_only)
    .map_err(|e| failed(Sysexit::Config, format!("{e:#}")))?;
    match options.mode {
        Mode::Deliver => deliver(&config, options).await,
        Mode::Verify => verify(&config, options.addresses).await,
        Mode::Smtp => smtp::serve(&config, options.full_name.as_deref()).await,
    }
}

/// `-bm`: the message on standard input to its recipients.
async fn deliver(config: &Config, options: Options) -> anyhow::Result<()> {
    let limit = config.limits.max_message_size;
    let input = read_message(&mut std::io::stdin().lock(), options.dots, limit)
        .map_err(|e| failed(Sysexit::DataErr, format!("cannot read the message: {e}")))?;
    let mut recipients = options.addresses;
    let (mut message, mut size) = (input.message, input.size);
    // -t: added to those of the command line, as Postfix does.
    if options.extract && input.size as usize == message.len() {
        let (extracted, without_bcc) = extract_recipients(&message);
        recipients.extend(extracted);
        size = without_bcc.len() as u64;
        message = without_bcc;
    }
    if recipients.is_empty() {
        return Err(failed(
            Sysexit::Usage,
            "no recipients: name them after the options, or use -t to take them from the message",
        ));
    }
    let envelope = Envelope {
        sender: options.sender,
        full_name: options.full_name,
        recipients,
        size,
    };
    match client::send(config, envelope, &message).await {
        Ok(Answer::Queued { id }) => {
            if options.verbose {
                eprintln!("postern sendmail: queued as {id}");
            }
            Ok(())
        }
        Ok(Answer::Refused { reply }) => Err(failed(
            Sysexit::of(&reply),
            format!("the message was not sent: {reply}"),
        )),
        Ok(other) => Err(failed(
            Sysexit::Software,
            format!("the server answered {other:?} to a message"),
        )),
        Err(e) => Err(failed(e.status(), e.to_string())),
    }
}

/// `-bv`: one line per address, as sendmail prints them; the status of the
/// first refusal if any is refused.
async fn verify(config: &Config, addresses: Vec<String>) -> anyhow::Result<()> {
    if addresses.is_empty() {
        return Err(failed(Sysexit::Usage, "-bv needs addresses to verify"));
    }
    let results = match client::verify(config, addresses.clone()).await {
        Ok(Answer::Verified { results }) if results.len() == addresses.len() => results,
        Ok(Answer::Refused { reply }) => {
            return Err(failed(Sysexit::of(&reply), format!("{reply}")));
        }
        Ok(other) => {
            return Err(failed(
                Sysexit::Software,
                format!("the server answered {other:?} to -bv"),
            ));
        }
        Err(e) => return Err(failed(e.status(), e.to_string())),
    };
    let mut out = std::io::stdout().lock();
    let mut first = None;
    for (address, refused) in addresses.iter().zip(&results) {
        match refused {
            None => writeln!(out, "{address}... deliverable")?,
            Some(reply) => {
                writeln!(out, "{address}... undeliverable: {reply}")?;
                first.get_or_insert(Sysexit::of(reply));
            }
        }
    }
    match first {
        None => Ok(()),
        Some(status) => Err(failed(status, "some addresses would not be accepted")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(line: &str) -> Result<Options, String> {
        let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        parse(&args)
    }

    #[test]
    fn sendmails_usual_command_lines() {
        let o = options("-t -i").expect("-t -i");
        assert!(o.extract && o.dots == Dots::AreText && o.addresses.is_empty());
        let o = options("-ti -oi -fweb@x.example -F Web -oem -odb -B8BITMIME -N never -R hdrs -X /tmp/log -V id -v bob@y.example -- -carol@y.example")
            .expect("parses");
        assert_eq!(o.sender.as_deref(), Some("web@x.example"));
        assert_eq!(o.full_name.as_deref(), Some("Web"));
        assert!(o.extract && o.verbose);
        assert_eq!(o.addresses, ["bob@y.example", "-carol@y.example"]);
        let o = options("-f web@x.example -FWeb -oi -bm a@b.example --config /etc/p.toml")
            .expect("parses");
        assert_eq!(
            (o.sender.as_deref(), o.full_name.as_deref()),
            (Some("web@x.example"), Some("Web"))
        );
        assert_eq!(o.config, Some(PathBuf::from("/etc/p.toml")));
        assert_eq!(o.dots, Dots::AreText);
        assert_eq!(options("-bs").expect("-bs").mode, Mode::Smtp);
        assert_eq!(options("-bv a@b.example").expect("-bv").mode, Mode::Verify);
        assert_eq!(
            options("-r a@b.example").expect("-r").sender.as_deref(),
            Some("a@b.example")
        );
        assert_eq!(options("-oem").expect("-oem").dots, Dots::EndMessage);
    }

    #[test]
    fn what_it_cannot_do_is_a_usage_error() {
        for (line, why) in [
            ("-bp", "-bp is not supported"),
            ("-bd", "-bd is not supported"),
            ("-q", "does not run the queue"),
            ("-f", "option -f needs a value"),
            ("-y", "unknown option -y"),
            ("--colour", "unknown option --colour"),
        ] {
            let e = options(line).expect_err(line);
            assert!(e.contains(why), "{line}: {e}");
        }
    }
}
