//! `postern serve`: load the configuration and run the server.

use super::ConfigArg;

pub async fn run(config: &ConfigArg) -> anyhow::Result<()> {
    let config = config.load()?;
    tracing::info!(
        event = "starting",
        hostname = %config.hostname,
        data_dir = %config.data_dir.display(),
        config = %config.source.as_ref().map_or("built-in defaults".to_string(), |p| p.display().to_string()),
    );
    crate::server::run(config).await?;
    Ok(())
}
