//! `postern serve`: load the configuration and run the server.

use super::ConfigArg;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.config.load()?;
    tracing::info!(
        event = "starting",
        hostname = %config.hostname,
        data_dir = %config.data_dir.display(),
        config = %config.source.as_ref().map_or("built-in defaults".to_string(), |p| p.display().to_string()),
    );
    crate::server::run(config).await?;
    Ok(())
}
