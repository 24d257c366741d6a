//! `attestd`: parse the configuration, open the state, serve until SIGINT
//! or SIGTERM.

use anyhow::Context;
use attestd::config::{Cli, Config};
use attestd::executor::Daemon;
use clap::Parser;
use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).context("invalid --log filter")?,
        )
        .with_writer(std::io::stderr)
        .init();
    let config = Config::resolve(&cli)?;
    tracing::info!(
        state_dir = %config.state_dir.display(),
        builder_id = %config.builder_id,
        helper = %config.sandbox_helper.display(),
        "starting attestd"
    );
    let socket = config.socket.clone();
    let daemon = Arc::new(Daemon::open(config).context("cannot open the daemon's state")?);
    tracing::info!(keyid = %daemon.signer.keyid(), "signing key loaded");
    attestd::server::serve(daemon, &socket, shutdown_signal())
        .await
        .context("the server stopped with an error")?;
    tracing::info!("attestd stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
