//! Configuration: command-line flags over environment variables over a TOML
//! file over built-in defaults. `attestd` with no configuration at all is a
//! working daemon.

use attest_provenance::keys::KeyIdScheme;
use attest_sandbox::Limits;
use clap::{Parser, Subcommand};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the configuration could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    /// A flag, variable or config key (named as the flag) with a value
    /// the daemon cannot use.
    #[error("invalid setting {name}: {reason}")]
    Setting { name: &'static str, reason: String },
    /// `--tls-key` names a file that group or others may read: refused
    /// rather than served, as the signing key is.
    #[error("the TLS key {path} is readable by group or others (mode {mode:o}); chmod 600 it")]
    TlsKeyReadable { path: PathBuf, mode: u32 },
    #[error("cannot check the permissions of the TLS key {path}")]
    TlsKeyStat {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// attestd runs build steps in hermetic sandboxes and signs in-toto / SLSA
/// provenance for what they produced.
///
/// With no flags it keeps its state in the default state directory,
/// generates an Ed25519 signing key there on first start, and listens on
/// the default Unix socket, which the `attest` client finds by itself.
/// Every flag can also be set by the environment variable shown, or in the
/// TOML config file (same names, with `_` for `-`; limits in a `[limits]`
/// table).
#[derive(Debug, Parser)]
#[command(name = "attestd", version, about, long_about)]
pub struct Cli {
    /// Directory for the content store, attestation index, signing key and
    /// build scratch space. Default: /var/lib/attestd as root,
    /// $XDG_STATE_HOME/attestd (or ~/.local/state/attestd) otherwise.
    #[arg(long, env = "ATTESTD_STATE_DIR", value_name = "DIR", global = true)]
    pub state_dir: Option<PathBuf>,

    /// Unix socket to listen on. Default: /run/attestd/attestd.sock as root,
    /// $XDG_RUNTIME_DIR/attestd/attestd.sock or /tmp/attestd-UID/attestd.sock
    /// otherwise (the same path `attest` dials by default).
    #[arg(long, env = "ATTESTD_SOCKET", value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,

    /// TOML config file. Default: /etc/attestd/attestd.toml as root,
    /// ~/.config/attestd/attestd.toml otherwise; a missing default file is
    /// not an error, a missing named file is.
    #[arg(long, env = "ATTESTD_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// The SLSA builder.id written into every provenance: a URI that names
    /// this daemon's trust boundary. Default: urn:attestd:host:HOSTNAME.
    #[arg(long, env = "ATTESTD_BUILDER_ID", value_name = "URI")]
    pub builder_id: Option<String>,

    /// The keyid written beside each envelope signature: `securesystemslib`
    /// (what in-toto and securesystemslib compute, the default),
    /// `sha256-fingerprint` (sha256 of the public key's DER) or `none`
    /// (empty, as cosign and sigstore-go expect). Verifiers treat it as a
    /// hint only; link metadata always uses securesystemslib keyids, which
    /// in-toto layouts name.
    #[arg(long, env = "ATTESTD_KEYID_SCHEME", value_name = "SCHEME")]
    pub keyid_scheme: Option<KeyIdScheme>,

    /// The sandbox helper binary. Default: `attestd-sandbox` next to this
    /// executable, then on $PATH.
    #[arg(
        long,
        env = "ATTESTD_SANDBOX_HELPER",
        value_name = "PATH",
        global = true
    )]
    pub sandbox_helper: Option<PathBuf>,

    /// How many steps may run at once; further requests wait (their stream
    /// shows "queued"). Default: the number of CPUs.
    #[arg(long, env = "ATTESTD_MAX_PARALLEL_BUILDS", value_name = "N")]
    pub max_parallel_builds: Option<usize>,

    /// Wall-clock time a step gets when its request names none. Default: 15m.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub default_timeout: Option<Duration>,
    /// Longest wall-clock time any request may ask for. Default: 2h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_timeout: Option<Duration>,
    /// Memory a step gets when its request names none. Default: 2GiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub default_memory: Option<u64>,
    /// Most memory any request may ask for. Default: 16GiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory: Option<u64>,
    /// Processes a step may have at once when its request names none. Default: 512.
    #[arg(long, value_name = "N")]
    pub default_pids: Option<u64>,
    /// Most processes any request may ask for. Default: 4096.
    #[arg(long, value_name = "N")]
    pub max_pids: Option<u64>,
    /// Bytes a step may write (working tree and /tmp together) and hand
    /// back (outputs, in logical bytes) when its request names none.
    /// Default: 1GiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub default_max_output: Option<u64>,
    /// Most output any request may ask for. Default: 8GiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_max_output: Option<u64>,
    /// Most files one build may hand back, all declared outputs together
    /// (a declared directory counts each file under it). A build that
    /// leaves more is refused before anything is signed, with this limit
    /// named: its result would not reach the client. Default: 10000; at
    /// most 50000, past which the list of outputs alone no longer fits in
    /// the 4 MiB gRPC message a client accepts.
    #[arg(long, env = "ATTESTD_MAX_OUTPUT_FILES", value_name = "N")]
    pub max_output_files: Option<u64>,
    /// Bytes of each of a step's logs (stdout, stderr) kept when its
    /// request names none; past it the first and last halves are kept and
    /// the middle dropped. Default: 64MiB.
    #[arg(long, env = "ATTESTD_DEFAULT_MAX_LOG", value_name = "SIZE", value_parser = parse_size)]
    pub default_max_log: Option<u64>,
    /// Most log bytes (each of stdout, stderr) any request may ask for.
    /// Default: 1GiB.
    #[arg(long, env = "ATTESTD_MAX_MAX_LOG", value_name = "SIZE", value_parser = parse_size)]
    pub max_max_log: Option<u64>,
    /// CPU time (user + system) a step gets when its request names none. Default: 1h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub default_cpu_time: Option<Duration>,
    /// Most CPU time any request may ask for. Default: 8h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_cpu_time: Option<Duration>,

    /// Size cap of the content store (blobs): over it, the least recently
    /// used blobs are evicted. 0: no cap. Default: 20GiB.
    #[arg(long, env = "ATTESTD_CAS_MAX_SIZE", value_name = "SIZE", value_parser = parse_size, global = true)]
    pub cas_max_size: Option<u64>,
    /// Size cap of the materialized input trees (STATE/inputs): over it, the
    /// least recently used trees are evicted. 0: no cap. Default: 10GiB.
    #[arg(long, env = "ATTESTD_INPUTS_MAX_SIZE", value_name = "SIZE", value_parser = parse_size, global = true)]
    pub inputs_max_size: Option<u64>,
    /// Size of the tmpfs that holds materialized input trees in memory
    /// (STATE/inputs-mem), when the daemon runs as root: a tree whose files
    /// take at most half of it, and fit in what is free, is materialized
    /// there instead of on disk (where creating 20,000 files costs more
    /// than hashing them); trees that do not fit, or hit a full tmpfs, go
    /// to STATE/inputs as before. The least recently used trees there are
    /// evicted once they take more than half of it, so a tree of the
    /// largest size admitted always fits after a collection. The tmpfs
    /// lives in the daemon's private mount namespace: it is invisible from
    /// the host (`attestd gc` cannot see it), and it and its trees vanish
    /// when the daemon stops, however it stops. Pages are only used as
    /// trees fill them. 0: no memory cache. Default: a quarter of MemTotal.
    #[arg(long, env = "ATTESTD_INPUTS_MEMORY_SIZE", value_name = "SIZE", value_parser = parse_size, global = true)]
    pub inputs_memory_size: Option<u64>,
    /// Nothing used more recently than this is evicted, whatever the caps
    /// (covers the time between a client's upload and its build). Default: 1h.
    #[arg(long, env = "ATTESTD_GC_MIN_AGE", value_name = "DURATION", value_parser = parse_duration, global = true)]
    pub gc_min_age: Option<Duration>,
    /// How often the running daemon collects (also once at start); "0s"
    /// turns automatic collection off (`attestd gc` still works). Default: 10m.
    #[arg(long, env = "ATTESTD_GC_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub gc_interval: Option<Duration>,

    /// Hash the host rootfs that every sandbox binds read-only (/usr,
    /// /etc/ssl...) and record a digest per bind in the provenance: `on` or
    /// `off`. The first hash reads the whole rootfs on a background thread
    /// at start (builds that end before it is done record the rootfs with
    /// `hashed: false` and say why); its digests are cached in
    /// STATE/rootfs-digests.bin. After a build, a bind with no inotify event
    /// since its last walk keeps its digest; one with events is walked again
    /// (one stat per entry). The watches (one per rootfs directory, about
    /// 15,000 for a typical /usr) take at most half of
    /// fs.inotify.max_user_watches; past that, a bind not fully watched is
    /// walked after every build (logged once): raise the limit with `sysctl
    /// fs.inotify.max_user_watches=N` (persist it in /etc/sysctl.d/). With
    /// `off` the rootfs is named in the provenance with `hashed: false`.
    /// Default: on.
    #[arg(long, env = "ATTESTD_ROOTFS_HASHING", value_name = "on|off", value_parser = parse_on_off)]
    pub rootfs_hashing: Option<bool>,

    /// Also listen on TCP, `tcp://ADDR:PORT` (repeatable; the Unix socket
    /// stays). Every TCP connection is TLS with a client certificate that
    /// --client-ca signed, so --tls-cert, --tls-key and --client-ca are
    /// required, unless --dangerously-allow-plaintext-tcp.
    #[arg(
        long = "listen",
        env = "ATTESTD_LISTEN",
        value_name = "tcp://ADDR:PORT",
        value_delimiter = ','
    )]
    pub listen: Vec<String>,
    /// The server certificate (chain) of the TCP listeners, PEM.
    #[arg(long, env = "ATTESTD_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// The server certificate's private key, PEM; refused if group or others
    /// can read it.
    #[arg(long, env = "ATTESTD_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// The CA certificate(s), PEM, that client certificates must chain to.
    /// Every TCP client must present one.
    #[arg(long, env = "ATTESTD_CLIENT_CA", value_name = "PEM")]
    pub client_ca: Option<PathBuf>,
    /// A client identity allowed to call the TCP listeners (repeatable):
    /// matched against the verified certificate's SAN URIs, SAN DNS names
    /// and `CN=<common name>`; `*` matches any run of characters other than
    /// `/` (e.g. `spiffe://example.org/runner/*`). Others are refused with
    /// PERMISSION_DENIED. Without any, every certificate --client-ca signed
    /// is allowed. The Unix socket is governed by its mode and group.
    #[arg(
        long = "allow-client",
        env = "ATTESTD_ALLOW_CLIENT",
        value_name = "PATTERN",
        value_delimiter = ','
    )]
    pub allow_client: Vec<String>,
    /// Serve --listen addresses as plaintext TCP: no TLS, no client
    /// identity, anyone who can reach the port can request builds. Recorded
    /// in every provenance this daemon signs (dangerousOptions), which
    /// `attest verify --require-hermetic` then refuses. For tests behind
    /// another authenticating layer only.
    #[arg(long, env = "ATTESTD_DANGEROUSLY_ALLOW_PLAINTEXT_TCP")]
    pub dangerously_allow_plaintext_tcp: bool,

    /// Log filter, in tracing's EnvFilter syntax (e.g. "info", "attestd=debug").
    #[arg(
        long,
        env = "ATTESTD_LOG",
        default_value = "info",
        value_name = "FILTER",
        global = true
    )]
    pub log: String,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do instead of serving.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Collect garbage now: evict least recently used blobs and materialized
    /// trees until the content store and the tree cache are under their caps
    /// (--cas-max-size, --inputs-max-size), sparing anything used within
    /// --gc-min-age and any tree a build's run directory names. Refuses to
    /// run while a daemon uses the state dir (the daemon collects by itself
    /// every --gc-interval). Sees the trees on disk only: the memory trees
    /// live in a running daemon's private tmpfs and go when it stops.
    Gc {
        /// Report what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Parses "90s", "15m", "1h 30m" (humantime syntax).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 90s or 15m: {e}"))
}

pub use attest_proto::parse_size;

/// Parses `on` or `off`.
pub fn parse_on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{text:?} is neither on nor off")),
    }
}

/// The config file's shape. Same names as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    state_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    builder_id: Option<String>,
    keyid_scheme: Option<String>,
    sandbox_helper: Option<PathBuf>,
    max_parallel_builds: Option<usize>,
    cas_max_size: Option<String>,
    inputs_max_size: Option<String>,
    inputs_memory_size: Option<String>,
    gc_min_age: Option<String>,
    gc_interval: Option<String>,
    rootfs_hashing: Option<String>,
    listen: Option<Vec<String>>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    allow_client: Option<Vec<String>>,
    dangerously_allow_plaintext_tcp: Option<bool>,
    #[serde(default)]
    limits: FileLimits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    default_timeout: Option<String>,
    max_timeout: Option<String>,
    default_memory: Option<String>,
    max_memory: Option<String>,
    default_pids: Option<u64>,
    max_pids: Option<u64>,
    default_max_output: Option<String>,
    max_max_output: Option<String>,
    default_cpu_time: Option<String>,
    max_cpu_time: Option<String>,
    max_output_files: Option<u64>,
    default_max_log: Option<String>,
    max_max_log: Option<String>,
}

/// Default and maximum limits; a request's zero means the default, and
/// anything above the maximum is capped.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitPolicy {
    pub defaults: Limits,
    pub maxima: Limits,
}

impl LimitPolicy {
    /// The limits in force for a request.
    pub fn resolve(&self, requested: Option<&attest_proto::v1::Limits>) -> Limits {
        let pick = |asked: u64, default: u64, max: u64| {
            if asked == 0 {
                default.min(max)
            } else {
                asked.min(max)
            }
        };
        let asked = requested.cloned().unwrap_or_default();
        let max_output_bytes = pick(
            asked.max_output_bytes,
            self.defaults.max_output_bytes,
            self.maxima.max_output_bytes,
        );
        Limits {
            timeout_ms: pick(
                asked.timeout_ms,
                self.defaults.timeout_ms,
                self.maxima.timeout_ms,
            ),
            memory_bytes: pick(
                asked.memory_bytes,
                self.defaults.memory_bytes,
                self.maxima.memory_bytes,
            ),
            pids: pick(asked.pids, self.defaults.pids, self.maxima.pids),
            cpu_time_ms: pick(
                asked.cpu_time_ms,
                self.defaults.cpu_time_ms,
                self.maxima.cpu_time_ms,
            ),
            max_output_bytes,
            // Sizes nothing in the sandbox: /tmp shares the output budget
            // (the spec keeps the field; the provenance does not record it).
            tmp_bytes: max_output_bytes,
            max_log_bytes: pick(
                asked.max_log_bytes,
                self.defaults.max_log_bytes,
                self.maxima.max_log_bytes,
            ),
        }
    }
}

/// When and how much the collector (`store/gc.rs`) removes; lives here
/// so that the collector depends on the configuration and not back.
#[derive(Debug, Clone, PartialEq)]
pub struct GcPolicy {
    /// Cap on the content store's blob bytes; 0: no cap.
    pub cas_max_bytes: u64,
    /// Cap on the materialized trees' file bytes on disk; 0: no cap.
    pub inputs_max_bytes: u64,
    /// Cap on the bytes of the trees in the memory tmpfs (half its size);
    /// 0: no memory trees, or no cap.
    pub inputs_memory_max_bytes: u64,
    /// Nothing used more recently than this is evicted.
    pub min_age: Duration,
}

/// The daemon's resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub builder_id: String,
    /// How envelope signatures name their key.
    pub keyid_scheme: KeyIdScheme,
    pub sandbox_helper: PathBuf,
    pub max_parallel_builds: usize,
    pub limits: LimitPolicy,
    /// `--max-output-files`: most files one build may hand back.
    pub max_output_files: usize,
    pub gc: GcPolicy,
    /// None: no automatic collection.
    pub gc_interval: Option<Duration>,
    /// Whether the host rootfs is hashed into the provenance.
    pub rootfs_hashing: bool,
    /// Size of the input trees' tmpfs (`--inputs-memory-size`); 0: trees
    /// stay on disk. `main` sets it to 0 when the tmpfs could not be
    /// mounted (not root, or the mount failed), so a daemon with a nonzero
    /// value here has the tmpfs at STATE/inputs-mem.
    pub inputs_memory_bytes: u64,
    /// The TCP listeners (`--listen`); empty: the Unix socket only.
    pub tcp: TcpConfig,
    /// Options in force that weaken what a provenance can be trusted for,
    /// as flags (`--dangerously-...`); recorded in every provenance.
    pub dangerous_options: Vec<String>,
}

/// The TCP listeners and who may call them.
#[derive(Debug, Clone, Default)]
pub struct TcpConfig {
    pub listen: Vec<std::net::SocketAddr>,
    /// None: plaintext (`--dangerously-allow-plaintext-tcp`).
    pub tls: Option<TlsFiles>,
    pub allow: crate::requester::AllowList,
}

/// The PEM files of the mTLS listeners.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

/// The flag recorded in dangerousOptions for a plaintext TCP listener.
pub const PLAINTEXT_TCP_OPTION: &str = "--dangerously-allow-plaintext-tcp";

/// Parses `tcp://ADDR:PORT`.
fn parse_listen(text: &str) -> Result<std::net::SocketAddr, ConfigError> {
    let invalid = |reason: String| ConfigError::Setting {
        name: "listen",
        reason,
    };
    let addr = text
        .strip_prefix("tcp://")
        .ok_or_else(|| invalid(format!("{text:?} is not tcp://ADDR:PORT")))?;
    addr.parse().map_err(|e| {
        invalid(format!(
            "{text:?}: {addr:?} is not an IP address and port: {e}"
        ))
    })
}

/// Refuses a key file that group or others may read.
fn check_key_private(path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|source| ConfigError::TlsKeyStat {
            path: path.to_path_buf(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o044 != 0 {
        return Err(ConfigError::TlsKeyReadable {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// Resolves the TCP settings: flags over the file.
fn resolve_tcp(cli: &Cli, file: &FileConfig) -> Result<(TcpConfig, Vec<String>), ConfigError> {
    let listen_text = if cli.listen.is_empty() {
        file.listen.clone().unwrap_or_default()
    } else {
        cli.listen.clone()
    };
    let listen = listen_text
        .iter()
        .map(|l| parse_listen(l))
        .collect::<Result<Vec<_>, _>>()?;
    let plaintext =
        cli.dangerously_allow_plaintext_tcp || file.dangerously_allow_plaintext_tcp == Some(true);
    let cert = cli.tls_cert.clone().or(file.tls_cert.clone());
    let key = cli.tls_key.clone().or(file.tls_key.clone());
    let client_ca = cli.client_ca.clone().or(file.client_ca.clone());
    let allow = crate::requester::AllowList {
        patterns: if cli.allow_client.is_empty() {
            file.allow_client.clone().unwrap_or_default()
        } else {
            cli.allow_client.clone()
        },
    };
    let mut dangerous = Vec::new();
    if listen.is_empty() {
        return Ok((TcpConfig::default(), dangerous));
    }
    let tls = match (plaintext, cert, key, client_ca) {
        (true, None, None, None) => {
            dangerous.push(PLAINTEXT_TCP_OPTION.to_string());
            None
        }
        (true, ..) => return Err(ConfigError::Setting {
            name: "dangerously-allow-plaintext-tcp",
            reason:
                "--tls-cert, --tls-key and --client-ca would not be used: give either those or this"
                    .into(),
        }),
        (false, Some(cert), Some(key), Some(client_ca)) => {
            check_key_private(&key)?;
            Some(TlsFiles {
                cert,
                key,
                client_ca,
            })
        }
        (false, cert, key, ca) => {
            let missing: Vec<&str> = [
                (cert.is_none(), "--tls-cert"),
                (key.is_none(), "--tls-key"),
                (ca.is_none(), "--client-ca"),
            ]
            .into_iter()
            .filter_map(|(absent, flag)| absent.then_some(flag))
            .collect();
            return Err(ConfigError::Setting {
                name: "listen",
                reason: format!(
                    "a TCP listener needs {} (client certificates are required)",
                    missing.join(", ")
                ),
            });
        }
    };
    Ok((TcpConfig { listen, tls, allow }, dangerous))
}

const GIB: u64 = 1 << 30;

/// Default of `--default-max-log`: each of a step's logs.
pub const DEFAULT_MAX_LOG: u64 = 64 << 20;
/// Smallest log cap accepted: below it a log would keep too little of its
/// head and tail to say why a step failed (and 0 would keep nothing).
pub const MIN_MAX_LOG: u64 = 1 << 10;

/// A log cap from the configuration, refused below [`MIN_MAX_LOG`].
fn log_cap(bytes: u64, name: &'static str) -> Result<u64, ConfigError> {
    if bytes < MIN_MAX_LOG {
        return Err(ConfigError::Setting {
            name,
            reason: format!("{bytes} bytes is below the least log cap, {MIN_MAX_LOG}"),
        });
    }
    Ok(bytes)
}

/// Default of `--max-output-files`.
pub const DEFAULT_MAX_OUTPUT_FILES: u64 = 10_000;
/// Largest `--max-output-files` accepted: an output costs at least about
/// 84 bytes in the build's result message (its path, its digest's hex and
/// size) before the envelope names it again, so past this many the result
/// cannot fit the 4 MiB gRPC message a client decodes by default.
pub const MAX_OUTPUT_FILES_CEILING: u64 = 50_000;

impl Config {
    /// Resolves flags/env (already merged by clap) over the config file
    /// over defaults.
    pub fn resolve(cli: &Cli) -> Result<Config, ConfigError> {
        let is_root = attest_proto::current_uid() == 0;
        let (config_path, explicit) = match &cli.config {
            Some(path) => (path.clone(), true),
            None => (default_config_path(is_root), false),
        };
        let file = load_file(&config_path, explicit)?;
        let (tcp, dangerous_options) = resolve_tcp(cli, &file)?;
        let state_dir = cli
            .state_dir
            .clone()
            .or(file.state_dir)
            .unwrap_or_else(|| default_state_dir(is_root));
        let socket = cli
            .socket
            .clone()
            .or(file.socket)
            .unwrap_or_else(attest_proto::default_socket_path);
        let keyid_scheme = match (cli.keyid_scheme, &file.keyid_scheme) {
            (Some(scheme), _) => scheme,
            (None, Some(text)) => {
                text.parse()
                    .map_err(
                        |e: attest_provenance::keys::KeyError| ConfigError::Setting {
                            name: "keyid_scheme",
                            reason: e.to_string(),
                        },
                    )?
            }
            (None, None) => KeyIdScheme::Securesystemslib,
        };
        let builder_id = cli
            .builder_id
            .clone()
            .or(file.builder_id)
            .unwrap_or_else(|| format!("urn:attestd:host:{}", hostname()));
        if !builder_id.contains(':') {
            return Err(ConfigError::Setting {
                name: "builder-id",
                reason: format!("{builder_id:?} is not a URI"),
            });
        }
        let sandbox_helper = match cli.sandbox_helper.clone().or(file.sandbox_helper) {
            Some(path) => path,
            None => attest_sandbox::find_helper().ok_or_else(|| ConfigError::Setting {
                name: "sandbox-helper",
                reason: "attestd-sandbox was not found next to attestd nor on PATH; build it (cargo build) or pass --sandbox-helper".into(),
            })?,
        };
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let max_parallel_builds = cli
            .max_parallel_builds
            .or(file.max_parallel_builds)
            .unwrap_or(cpus);
        if max_parallel_builds == 0 {
            return Err(ConfigError::Setting {
                name: "max-parallel-builds",
                reason: "must be at least 1".into(),
            });
        }
        let fl = &file.limits;
        let dur = |flag: Option<Duration>,
                   text: &Option<String>,
                   name: &'static str,
                   default: Duration|
         -> Result<u64, ConfigError> {
            let value = match (flag, text) {
                (Some(d), _) => d,
                (None, Some(t)) => {
                    parse_duration(t).map_err(|reason| ConfigError::Setting { name, reason })?
                }
                (None, None) => default,
            };
            Ok(value.as_millis() as u64)
        };
        let size = |flag: Option<u64>,
                    text: &Option<String>,
                    name: &'static str,
                    default: u64|
         -> Result<u64, ConfigError> {
            match (flag, text) {
                (Some(s), _) => Ok(s),
                (None, Some(t)) => {
                    parse_size(t).map_err(|reason| ConfigError::Setting { name, reason })
                }
                (None, None) => Ok(default),
            }
        };
        let min = Duration::from_secs(60);
        let defaults = Limits {
            timeout_ms: dur(
                cli.default_timeout,
                &fl.default_timeout,
                "default-timeout",
                15 * min,
            )?,
            memory_bytes: size(
                cli.default_memory,
                &fl.default_memory,
                "default-memory",
                2 * GIB,
            )?,
            pids: cli.default_pids.or(fl.default_pids).unwrap_or(512),
            cpu_time_ms: dur(
                cli.default_cpu_time,
                &fl.default_cpu_time,
                "default-cpu-time",
                60 * min,
            )?,
            max_output_bytes: size(
                cli.default_max_output,
                &fl.default_max_output,
                "default-max-output",
                GIB,
            )?,
            tmp_bytes: 0,
            max_log_bytes: log_cap(
                size(
                    cli.default_max_log,
                    &fl.default_max_log,
                    "default-max-log",
                    DEFAULT_MAX_LOG,
                )?,
                "default-max-log",
            )?,
        };
        let maxima = Limits {
            timeout_ms: dur(cli.max_timeout, &fl.max_timeout, "max-timeout", 120 * min)?,
            memory_bytes: size(cli.max_memory, &fl.max_memory, "max-memory", 16 * GIB)?,
            pids: cli.max_pids.or(fl.max_pids).unwrap_or(4096),
            cpu_time_ms: dur(
                cli.max_cpu_time,
                &fl.max_cpu_time,
                "max-cpu-time",
                480 * min,
            )?,
            max_output_bytes: size(
                cli.max_max_output,
                &fl.max_max_output,
                "max-max-output",
                8 * GIB,
            )?,
            tmp_bytes: 0,
            max_log_bytes: log_cap(
                size(cli.max_max_log, &fl.max_max_log, "max-max-log", GIB)?,
                "max-max-log",
            )?,
        };
        let max_output_files = cli
            .max_output_files
            .or(fl.max_output_files)
            .unwrap_or(DEFAULT_MAX_OUTPUT_FILES);
        if !(1..=MAX_OUTPUT_FILES_CEILING).contains(&max_output_files) {
            return Err(ConfigError::Setting {
                name: "max-output-files",
                reason: format!(
                    "{max_output_files} is not between 1 and {MAX_OUTPUT_FILES_CEILING}"
                ),
            });
        }
        let mut gc = GcPolicy {
            cas_max_bytes: size(
                cli.cas_max_size,
                &file.cas_max_size,
                "cas-max-size",
                20 * GIB,
            )?,
            inputs_max_bytes: size(
                cli.inputs_max_size,
                &file.inputs_max_size,
                "inputs-max-size",
                10 * GIB,
            )?,
            inputs_memory_max_bytes: 0,
            min_age: Duration::from_millis(dur(
                cli.gc_min_age,
                &file.gc_min_age,
                "gc-min-age",
                60 * min,
            )?),
        };
        let inputs_memory_bytes = match (cli.inputs_memory_size, &file.inputs_memory_size) {
            (None, None) => mem_total().map(|total| total / 4).unwrap_or(0),
            (flag, text) => size(flag, text, "inputs-memory-size", 0)?,
        };
        // Half the tmpfs: after a collection, a tree of the largest size
        // admitted there (half of it) still fits.
        gc.inputs_memory_max_bytes = inputs_memory_bytes / 2;
        let gc_interval = Some(Duration::from_millis(dur(
            cli.gc_interval,
            &file.gc_interval,
            "gc-interval",
            10 * min,
        )?))
        .filter(|d| !d.is_zero());
        let rootfs_hashing = match (cli.rootfs_hashing, &file.rootfs_hashing) {
            (Some(on), _) => on,
            (None, Some(text)) => parse_on_off(text).map_err(|reason| ConfigError::Setting {
                name: "rootfs-hashing",
                reason,
            })?,
            (None, None) => true,
        };
        Ok(Config {
            state_dir,
            socket,
            builder_id,
            keyid_scheme,
            sandbox_helper,
            max_parallel_builds,
            limits: LimitPolicy { defaults, maxima },
            max_output_files: max_output_files as usize,
            gc,
            gc_interval,
            rootfs_hashing,
            inputs_memory_bytes,
            tcp,
            dangerous_options,
        })
    }

    /// Turns the memory cache off (the tmpfs could not be mounted): trees
    /// all go to disk, and the collector has no memory trees to cap.
    pub fn without_inputs_memory(mut self) -> Config {
        self.inputs_memory_bytes = 0;
        self.gc.inputs_memory_max_bytes = 0;
        self
    }

    /// Sizes the memory cache to the tmpfs actually found (a service
    /// manager's may differ from `--inputs-memory-size`); the collector
    /// keeps memory trees to half of it, as for the configured size.
    pub fn with_inputs_memory(mut self, size_bytes: u64) -> Config {
        self.inputs_memory_bytes = size_bytes;
        self.gc.inputs_memory_max_bytes = size_bytes / 2;
        self
    }
}

/// MemTotal from /proc/meminfo, in bytes; None when unreadable.
fn mem_total() -> Option<u64> {
    parse_mem_total(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

fn load_file(path: &Path, explicit: bool) -> Result<FileConfig, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            Ok(FileConfig::default())
        }
        Err(e) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn default_config_path(is_root: bool) -> PathBuf {
    if is_root {
        PathBuf::from("/etc/attestd/attestd.toml")
    } else {
        std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| home().join(".config"))
            .join("attestd/attestd.toml")
    }
}

fn default_state_dir(is_root: bool) -> PathBuf {
    if is_root {
        PathBuf::from("/var/lib/attestd")
    } else {
        std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| home().join(".local/state"))
            .join("attestd")
    }
}

/// This host's name, for the default builder id.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["attestd", "--sandbox-helper", "/bin/true"];
        all.extend_from_slice(args);
        Cli::parse_from(all)
    }

    #[test]
    fn a_tcp_listener_needs_all_three_tls_files_or_the_dangerous_flag() {
        match Config::resolve(&cli(&[
            "--listen",
            "tcp://127.0.0.1:7000",
            "--tls-cert",
            "/c",
        ])) {
            Err(ConfigError::Setting { name, reason }) => {
                assert_eq!(name, "listen");
                assert_eq!(reason, "a TCP listener needs --tls-key, --client-ca (client certificates are required)");
            }
            other => panic!("{other:?}"),
        }
        match Config::resolve(&cli(&["--listen", "localhost:7000"])) {
            Err(ConfigError::Setting { name, reason }) => {
                assert_eq!(name, "listen");
                assert!(reason.contains("is not tcp://ADDR:PORT"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let plain = Config::resolve(&cli(&[
            "--listen",
            "tcp://127.0.0.1:7000",
            "--dangerously-allow-plaintext-tcp",
        ]))
        .unwrap();
        assert!(plain.tcp.tls.is_none());
        assert_eq!(plain.dangerous_options, [PLAINTEXT_TCP_OPTION]);
        // Without a listener the flag changes nothing, so nothing is recorded.
        let unused = Config::resolve(&cli(&["--dangerously-allow-plaintext-tcp"])).unwrap();
        assert!(unused.dangerous_options.is_empty());
        assert!(matches!(
            Config::resolve(&cli(&[
                "--listen",
                "tcp://127.0.0.1:7000",
                "--dangerously-allow-plaintext-tcp",
                "--tls-cert",
                "/c"
            ])),
            Err(ConfigError::Setting {
                name: "dangerously-allow-plaintext-tcp",
                ..
            })
        ));
    }

    #[test]
    fn the_tls_key_is_refused_when_group_or_others_can_read_it_and_the_file_sets_tcp() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("server.key");
        std::fs::write(&key, "not checked here").unwrap();
        let file = dir.path().join("attestd.toml");
        std::fs::write(
            &file,
            format!(
                "listen = [\"tcp://0.0.0.0:7443\"]\ntls_cert = \"/c.pem\"\ntls_key = {key:?}\nclient_ca = \"/ca.pem\"\nallow_client = [\"spiffe://example.org/runner/*\"]\n"
            ),
        )
        .unwrap();
        let config = file.to_str().unwrap();
        for mode in [0o644, 0o640, 0o604] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            match Config::resolve(&cli(&["--config", config])) {
                Err(ConfigError::TlsKeyReadable { path, mode: found }) => {
                    assert_eq!((path, found), (key.clone(), mode));
                }
                other => panic!("{mode:o}: {other:?}"),
            }
        }
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let resolved = Config::resolve(&cli(&["--config", config])).unwrap();
        assert_eq!(resolved.tcp.listen, ["0.0.0.0:7443".parse().unwrap()]);
        assert_eq!(
            resolved.tcp.allow.patterns,
            ["spiffe://example.org/runner/*"]
        );
        assert!(resolved.dangerous_options.is_empty());
    }

    #[test]
    fn flags_beat_config_file_which_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("attestd.toml");
        std::fs::write(
            &file,
            "state_dir = \"/from/file\"\nbuilder_id = \"https://example.com/b\"\n[limits]\ndefault_timeout = \"90s\"\nmax_memory = \"1G\"\n",
        )
        .unwrap();
        let cfg = Config::resolve(&cli(&[
            "--config",
            file.to_str().unwrap(),
            "--state-dir",
            "/from/flag",
        ]))
        .unwrap();
        assert_eq!(cfg.state_dir, PathBuf::from("/from/flag"));
        assert_eq!(cfg.builder_id, "https://example.com/b");
        assert_eq!(cfg.limits.defaults.timeout_ms, 90_000);
        assert_eq!(cfg.limits.maxima.memory_bytes, GIB);
    }

    #[test]
    fn max_output_files_comes_from_flag_env_or_limits_table_and_has_a_ceiling() {
        assert_eq!(
            Config::resolve(&cli(&[])).unwrap().max_output_files,
            DEFAULT_MAX_OUTPUT_FILES as usize
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("attestd.toml");
        std::fs::write(&file, "[limits]\nmax_output_files = 200\n").unwrap();
        let config = file.to_str().unwrap();
        assert_eq!(
            Config::resolve(&cli(&["--config", config]))
                .unwrap()
                .max_output_files,
            200
        );
        assert_eq!(
            Config::resolve(&cli(&["--config", config, "--max-output-files", "30"]))
                .unwrap()
                .max_output_files,
            30
        );
        for refused in ["0", "50001"] {
            match Config::resolve(&cli(&["--max-output-files", refused])) {
                Err(ConfigError::Setting { name, reason }) => {
                    assert_eq!(name, "max-output-files");
                    assert_eq!(reason, format!("{refused} is not between 1 and 50000"));
                }
                other => panic!("{refused} was not refused: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_config_keys_and_missing_named_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "stat_dir = \"/typo\"\n").unwrap();
        assert!(matches!(
            Config::resolve(&cli(&["--config", file.to_str().unwrap()])),
            Err(ConfigError::Parse { path, .. }) if path == file
        ));
        let missing = dir.path().join("missing.toml");
        assert!(matches!(
            Config::resolve(&cli(&["--config", missing.to_str().unwrap()])),
            Err(ConfigError::Read { path, source }) if path == missing
                && source.kind() == std::io::ErrorKind::NotFound
        ));
    }

    #[test]
    fn requests_are_capped_at_the_maxima_and_zero_means_default() {
        let cfg =
            Config::resolve(&cli(&["--max-memory", "1G", "--default-timeout", "10s"])).unwrap();
        let asked = attest_proto::v1::Limits {
            memory_bytes: 64 * GIB,
            ..Default::default()
        };
        let limits = cfg.limits.resolve(Some(&asked));
        assert_eq!(limits.memory_bytes, GIB);
        assert_eq!(limits.timeout_ms, 10_000);
        assert_eq!(limits.tmp_bytes, limits.max_output_bytes);
    }

    #[test]
    fn log_caps_come_from_flags_or_limits_table_and_requests_are_capped_at_the_maximum() {
        let limits = Config::resolve(&cli(&[])).unwrap().limits;
        assert_eq!(
            (limits.defaults.max_log_bytes, limits.maxima.max_log_bytes),
            (DEFAULT_MAX_LOG, GIB)
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("attestd.toml");
        std::fs::write(
            &file,
            "[limits]\ndefault_max_log = \"1M\"\nmax_max_log = \"8M\"\n",
        )
        .unwrap();
        let config = file.to_str().unwrap();
        let policy = Config::resolve(&cli(&["--config", config])).unwrap().limits;
        let asking = |max_log_bytes| {
            policy
                .resolve(Some(&attest_proto::v1::Limits {
                    max_log_bytes,
                    ..Default::default()
                }))
                .max_log_bytes
        };
        assert_eq!(asking(0), 1 << 20, "zero is the default");
        assert_eq!(asking(4 << 20), 4 << 20);
        assert_eq!(asking(1 << 40), 8 << 20, "capped at the maximum");
        let flagged = Config::resolve(&cli(&["--config", config, "--max-max-log", "2M"]))
            .unwrap()
            .limits;
        assert_eq!(flagged.maxima.max_log_bytes, 2 << 20, "the flag wins");
        // A default above the maximum is capped too, as for every limit.
        let low_max = Config::resolve(&cli(&["--max-max-log", "4K"]))
            .unwrap()
            .limits;
        assert_eq!(low_max.resolve(None).max_log_bytes, 4 << 10);
        for (flag, name) in [
            ("--default-max-log", "default-max-log"),
            ("--max-max-log", "max-max-log"),
        ] {
            match Config::resolve(&cli(&[flag, "0"])) {
                Err(ConfigError::Setting { name: got, reason }) => {
                    assert_eq!(got, name);
                    assert_eq!(reason, "0 bytes is below the least log cap, 1024");
                }
                other => panic!("{flag} 0 was not refused: {other:?}"),
            }
        }
    }

    #[test]
    fn gc_settings_have_documented_defaults_and_zero_interval_turns_it_off() {
        let cfg = Config::resolve(&cli(&[])).unwrap();
        assert_eq!(
            cfg.gc,
            GcPolicy {
                cas_max_bytes: 20 * GIB,
                inputs_max_bytes: 10 * GIB,
                inputs_memory_max_bytes: mem_total().unwrap() / 8,
                min_age: Duration::from_secs(3600),
            }
        );
        assert_eq!(cfg.gc_interval, Some(Duration::from_secs(600)));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("attestd.toml");
        std::fs::write(&file, "cas_max_size = \"1G\"\ngc_interval = \"0s\"\n").unwrap();
        let cfg = Config::resolve(&cli(&[
            "--config",
            file.to_str().unwrap(),
            "--inputs-max-size",
            "0",
        ]))
        .unwrap();
        assert_eq!(cfg.gc.cas_max_bytes, GIB);
        assert_eq!(cfg.gc.inputs_max_bytes, 0);
        assert_eq!(cfg.gc_interval, None);
        let gc = Cli::parse_from(["attestd", "gc", "--dry-run", "--cas-max-size", "1M"]);
        assert!(matches!(gc.command, Some(Command::Gc { dry_run: true })));
        assert_eq!(gc.cas_max_size, Some(1 << 20));
    }

    #[test]
    fn the_memory_cache_is_a_quarter_of_memtotal_unless_sized_and_zero_turns_it_off() {
        assert_eq!(
            parse_mem_total("MemTotal:        8049336 kB\nMemFree:  1 kB\n"),
            Some(8049336 * 1024)
        );
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        let total = mem_total().expect("/proc/meminfo names MemTotal");
        let cfg = Config::resolve(&cli(&[])).unwrap();
        assert_eq!(cfg.inputs_memory_bytes, total / 4);
        let cfg = Config::resolve(&cli(&["--inputs-memory-size", "0"])).unwrap();
        assert_eq!(cfg.inputs_memory_bytes, 0);
        assert_eq!(cfg.gc.inputs_memory_max_bytes, 0);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("attestd.toml");
        std::fs::write(&file, "inputs_memory_size = \"1G\"\n").unwrap();
        let path = file.to_str().unwrap();
        let cfg = Config::resolve(&cli(&["--config", path])).unwrap();
        assert_eq!(cfg.inputs_memory_bytes, GIB);
        assert_eq!(cfg.gc.inputs_memory_max_bytes, GIB / 2);
        let cfg = Config::resolve(&cli(&["--config", path, "--inputs-memory-size", "2G"])).unwrap();
        assert_eq!(cfg.inputs_memory_bytes, 2 * GIB);
        let off = cfg.without_inputs_memory();
        assert_eq!(
            (off.inputs_memory_bytes, off.gc.inputs_memory_max_bytes),
            (0, 0)
        );
        std::fs::write(&file, "inputs_memory_size = \"lots\"\n").unwrap();
        assert!(matches!(
            Config::resolve(&cli(&["--config", path])),
            Err(ConfigError::Setting {
                name: "inputs-memory-size",
                ..
            })
        ));
    }

    #[test]
    fn rootfs_hashing_is_on_unless_turned_off() {
        assert!(Config::resolve(&cli(&[])).unwrap().rootfs_hashing);
        let off = Config::resolve(&cli(&["--rootfs-hashing", "off"])).unwrap();
        assert!(!off.rootfs_hashing);
        assert!(Cli::try_parse_from(["attestd", "--rootfs-hashing", "maybe"]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("attestd.toml");
        std::fs::write(&file, "rootfs_hashing = \"off\"\n").unwrap();
        let path = file.to_str().unwrap();
        assert!(
            !Config::resolve(&cli(&["--config", path]))
                .unwrap()
                .rootfs_hashing
        );
        let flag_wins = cli(&["--config", path, "--rootfs-hashing", "on"]);
        assert!(Config::resolve(&flag_wins).unwrap().rootfs_hashing);
        std::fs::write(&file, "rootfs_hashing = \"yes\"\n").unwrap();
        assert!(matches!(
            Config::resolve(&cli(&["--config", path])),
            Err(ConfigError::Setting {
                name: "rootfs-hashing",
                ..
            })
        ));
    }

    #[test]
    fn sizes_and_durations_parse_as_users_write_them() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("soon").is_err());
    }
}
