//! `attestd`: parse the configuration, open the state, serve until SIGINT
//! or SIGTERM; or `attestd gc`: collect garbage in a stopped daemon's state.

use anyhow::Context;
use attestd::config::{Cli, Command, Config};
use attestd::executor::Daemon;
use clap::Parser;
use std::sync::Arc;

/// Not `#[tokio::main]`: the memory tmpfs needs a mount namespace of the
/// daemon's own, and `unshare(CLONE_NEWNS)` fails in a process with more
/// than one thread, so it is made before the runtime starts any.
fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).context("invalid --log filter")?,
        )
        .with_writer(std::io::stderr)
        .init();
    let config = Config::resolve(&cli)?;
    if let Some(Command::Gc { dry_run }) = cli.command {
        let report = attestd::store::gc::collect_offline(&config, dry_run)
            .context("garbage collection failed")?;
        println!("{}{report}", if dry_run { "dry run: " } else { "" });
        return Ok(());
    }
    let config = mount_inputs_memory(config);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(config))
}

/// Mounts the input trees' tmpfs (`--inputs-memory-size`) in a mount
/// namespace of the daemon's own, so it dies with the daemon and its
/// helpers; returns the config with the memory cache off when it is not
/// mounted (not root, turned off, or the mount failed: trees then all go to
/// disk). Runs while the process has one thread.
fn mount_inputs_memory(config: Config) -> Config {
    if config.inputs_memory_bytes == 0 {
        return config;
    }
    if attest_proto::current_uid() != 0 {
        tracing::debug!("not root: input trees are materialized on disk only");
        return config.without_inputs_memory();
    }
    let dir = config.state_dir.join(attestd::materialize::MEMORY_DIR);
    // 0700 under the mount too: seen from the host, an empty directory.
    let mounted = std::fs::create_dir_all(&dir)
        .and_then(|()| {
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        })
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
        .and_then(|()| {
            attest_sandbox::private_tmpfs(
                &attest_sandbox::sys::LinuxSyscalls,
                &dir,
                config.inputs_memory_bytes,
            )
            .map_err(|e| e.chain())
        });
    match mounted {
        Ok(()) => {
            tracing::info!(
                dir = %dir.display(),
                size = %bytesize::ByteSize(config.inputs_memory_bytes),
                "input trees that fit are materialized in memory (a tmpfs private to this daemon)"
            );
            config
        }
        Err(reason) => {
            tracing::warn!(%reason, "cannot mount the input trees' tmpfs: they are materialized on disk only");
            config.without_inputs_memory()
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    tracing::info!(
        state_dir = %config.state_dir.display(),
        builder_id = %config.builder_id,
        helper = %config.sandbox_helper.display(),
        "starting attestd"
    );
    let socket = config.socket.clone();
    let daemon = Arc::new(Daemon::open(config).context("cannot open the daemon's state")?);
    tracing::info!(keyid = %daemon.signer.keyid(), "signing key loaded");
    if let Some(interval) = daemon.config.gc_interval {
        tokio::spawn(collect_periodically(daemon.clone(), interval));
    }
    attestd::server::serve(daemon, &socket, shutdown_signal())
        .await
        .context("the server stopped with an error")?;
    tracing::info!("attestd stopped");
    Ok(())
}

/// The automatic policy: one collection at start, then one every
/// `interval`, each on a blocking thread so builds are not held up.
async fn collect_periodically(daemon: Arc<Daemon>, interval: std::time::Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let daemon = daemon.clone();
        let runs_dir = daemon.config.state_dir.join("runs");
        let result = tokio::task::spawn_blocking(move || {
            attestd::store::gc::collect(
                &daemon.store,
                &daemon.inputs,
                &runs_dir,
                &daemon.config.gc,
                false,
            )
        })
        .await;
        match result {
            Ok(Ok(report)) if report.blobs_removed + report.trees_removed > 0 => {
                tracing::info!(%report, "garbage collected")
            }
            Ok(Ok(report)) => tracing::debug!(%report, "nothing to collect"),
            Ok(Err(e)) => tracing::warn!(
                error = %attestd::error::error_chain(&e),
                "garbage collection failed"
            ),
            Err(e) => tracing::warn!(error = %e, "garbage collection task failed"),
        }
    }
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
