//! `postern serve`: load the configuration and run the server; `postern
//! reload`: have the running server read it again.

use std::io::Write;

use super::ConfigArg;
use crate::control::{self, Asked, Request, Response};

pub async fn run(config: &ConfigArg) -> anyhow::Result<()> {
    let config = config.load_to_serve()?;
    tracing::info!(
        event = "starting",
        hostname = %config.hostname,
        data_dir = %config.data_dir.display(),
        config = %config.source.as_ref().map_or("built-in defaults".to_string(), |p| p.display().to_string()),
    );
    crate::server::run(config).await?;
    Ok(())
}

/// Asks the server running on the configuration's data_dir to reload, as
/// SIGHUP does, and prints its report.
pub async fn reload(config: &ConfigArg) -> anyhow::Result<()> {
    let config = config.load()?;
    match control::ask(&config, &Request::Reload {}).await? {
        Asked::Answer(Response::Reloaded { report }) => {
            writeln!(std::io::stdout(), "{report}")?;
            Ok(())
        }
        Asked::Answer(Response::Failed { error }) => anyhow::bail!("not reloaded: {error}"),
        Asked::Answer(Response::Done { .. }) => {
            anyhow::bail!("the server answered the reload as a queue change")
        }
        Asked::NoServer(_lock) => anyhow::bail!(
            "no server runs on data_dir {}; there is nothing to reload",
            config.data_dir.display()
        ),
    }
}
