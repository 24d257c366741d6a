//! `attestd`: parse the configuration, open the state, serve until SIGINT
//! or SIGTERM; or `attestd gc`: collect garbage in a stopped daemon's state.
#![forbid(unsafe_code)]

use anyhow::Context;
use attestd::config::{Cli, Command, Config};
use attestd::executor::Daemon;
use clap::Parser;
use std::sync::Arc;

/// Not `#[tokio::main]`: when the daemon launches itself into its memory
/// namespace (`inputs_memory`) it execs, which must happen before the
/// runtime starts any thread.
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
    let config = inputs_memory(config);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(config))
}

/// Finds the input trees' tmpfs (`--inputs-memory-size`) at
/// `STATE/inputs-mem` and returns the config sized to it, or with the
/// memory cache off when there is none (not root, turned off, or the mount
/// failed: trees then all go to disk).
///
/// The daemon never mounts it itself. A service manager may provide it
/// (systemd's `TemporaryFileSystem=`); otherwise, as root, the daemon
/// execs `attestd-sandbox memory-namespace`, which makes a mount namespace
/// and the tmpfs and execs the daemon back, with the same arguments and
/// pid, inside it (`attest_sandbox::memory_namespace`).
fn inputs_memory(config: Config) -> Config {
    use attest_sandbox::memory_namespace::{
        launcher_command, probe_command, tmpfs_size_at, LAUNCHED_ENV, PROBE_ANSWER,
    };
    if config.inputs_memory_bytes == 0 {
        return config;
    }
    let launched = std::env::var(LAUNCHED_ENV).ok();
    // Read once: neither the helpers nor a later exec should inherit it.
    std::env::remove_var(LAUNCHED_ENV);
    let dir = config.state_dir.join(attestd::materialize::MEMORY_DIR);
    let found = std::fs::canonicalize(&dir).ok().and_then(|dir| {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        tmpfs_size_at(&mountinfo, &dir)
    });
    if let Some(size) = found {
        tracing::info!(
            dir = %dir.display(),
            size = %bytesize::ByteSize(size),
            provided_by = if launched.is_some() { "attestd-sandbox memory-namespace" } else { "the service manager" },
            "input trees that fit are materialized in memory (a tmpfs private to this daemon)"
        );
        return config.with_inputs_memory(size);
    }
    match launched {
        Some(outcome) => {
            let reason = outcome
                .strip_prefix("failed: ")
                .unwrap_or("the tmpfs is not mounted");
            tracing::warn!(%reason, "cannot mount the input trees' tmpfs: they are materialized on disk only");
            return config.without_inputs_memory();
        }
        None if attest_proto::current_uid() != 0 => {
            tracing::debug!("not root: input trees are materialized on disk only");
            return config.without_inputs_memory();
        }
        None => {}
    }
    // 0700 under the mount too: seen from the host, an empty directory.
    let prepared = std::fs::create_dir_all(&dir)
        .and_then(|()| {
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        })
        .and_then(|()| Ok((std::env::current_exe()?, std::fs::canonicalize(&dir)?)));
    // An exec cannot be taken back: first make sure the helper is the
    // launcher (a `--sandbox-helper` that is another program would
    // otherwise replace the daemon).
    let probed = probe_command(&config.sandbox_helper)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    let error = match (prepared, probed) {
        (Ok((exe, dir)), Ok(probe)) if probe.stdout == PROBE_ANSWER.as_bytes() => {
            use std::os::unix::process::CommandExt;
            let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
            launcher_command(
                &config.sandbox_helper,
                &dir,
                config.inputs_memory_bytes,
                &exe,
                &args,
            )
            .exec()
        }
        (Ok(_), Ok(_)) => std::io::Error::other("it is not attestd-sandbox's launcher"),
        (Err(e), _) | (_, Err(e)) => e,
    };
    tracing::warn!(
        reason = %error,
        helper = %config.sandbox_helper.display(),
        "cannot launch into the input trees' memory namespace: they are materialized on disk only"
    );
    config.without_inputs_memory()
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
