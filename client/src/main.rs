//! `attest`: the command line for CI runners, build engineers and verifiers.
#![forbid(unsafe_code)]

use anyhow::Context;
use attest::policy::{read_policies, read_policy_data};
use attest::run::{run_build, LogStream, Observer, RunOptions};
use attest::verify::{
    read_input, read_keys, read_provenance_files, resolve_artifact, run_policy, verify,
    EXIT_BAD_INPUT,
};
use attest::{sidecar, Client};
use attest_provenance::verify::Expectations;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// attest: run build steps through attestd and verify what they produced.
#[derive(Debug, Parser)]
#[command(name = "attest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the daemon is; shared by every subcommand.
#[derive(Debug, Args)]
struct SocketArg {
    /// The daemon's Unix socket. Default: the path attestd listens on by
    /// default for this user (/run/attestd/attestd.sock as root); a non-root
    /// user without a daemon of its own gets the system daemon's socket.
    #[arg(long, env = attest_proto::SOCKET_ENV, value_name = "PATH", global = true)]
    socket: Option<PathBuf>,
    /// A daemon's TCP listener instead of the socket (it takes precedence
    /// over --socket and ATTEST_SOCKET): https://HOST:PORT
    /// (mutual TLS, with --tls-ca, --tls-cert and --tls-key), or
    /// http://HOST:PORT for a daemon serving plaintext TCP.
    #[arg(long, env = "ATTEST_ENDPOINT", value_name = "URL", global = true)]
    endpoint: Option<String>,
    /// The CA certificate (PEM) that signed the daemon's server certificate.
    #[arg(
        long,
        env = "ATTEST_TLS_CA",
        value_name = "PEM",
        global = true,
        requires = "endpoint"
    )]
    tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM), signed by the daemon's --client-ca.
    #[arg(
        long,
        env = "ATTEST_TLS_CERT",
        value_name = "PEM",
        global = true,
        requires = "endpoint"
    )]
    tls_cert: Option<PathBuf>,
    /// This client's private key (PEM).
    #[arg(
        long,
        env = "ATTEST_TLS_KEY",
        value_name = "PEM",
        global = true,
        requires = "endpoint"
    )]
    tls_key: Option<PathBuf>,
}

impl SocketArg {
    /// Dials the endpoint when one is given, else the socket.
    async fn connect(&self) -> Result<Client, attest::ClientError> {
        let Some(endpoint) = &self.endpoint else {
            let socket = self
                .socket
                .clone()
                .unwrap_or_else(attest_proto::client_socket_path);
            return Client::connect(&socket).await;
        };
        let tls = match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (None, None, None) => None,
            (Some(ca), Some(cert), Some(key)) => Some(attest::client::ClientTls {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => {
                return Err(attest::ClientError::Invalid(
                    "--tls-ca, --tls-cert and --tls-key go together".into(),
                ))
            }
        };
        Client::connect_endpoint(endpoint, tls.as_ref()).await
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one build step in the daemon's sandbox and write its signed provenance.
    ///
    /// The step sees --src as its working directory (at /build); each --out
    /// is relative to it. Products are written to --out-dir at the same
    /// relative paths, and the DSSE envelope to --attestation. Exit status
    /// mirrors the step's.
    Run(RunArgs),
    /// Verify artifacts against a provenance envelope and trusted keys.
    ///
    /// Checks, in order, failing closed: (1) a trusted key signed the
    /// envelope; (2) statement and predicate types; (3) every artifact's
    /// sha256 is a subject; (4) the expectations given; then (5) the Rego
    /// policies, if any (--policy, docs/policy.md). Each failure has its
    /// own exit code (10-24, 25 too few rebuilders vouched
    /// (--require-reproduced-by), 26 the requester did not match
    /// (--requester), 30 policy refused, 31 policy error, see the README);
    /// 2 means unreadable input. --layout verifies an in-toto layout
    /// instead (32), --vsa a verification summary (33).
    Verify(VerifyArgs),
    /// Print the daemon's public verification keys as PEM.
    Pubkey {
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Generate a signing key pair: PREFIX.key.pem (PKCS#8, mode 0600) and
    /// PREFIX.pub.pem (SubjectPublicKeyInfo). Never overwrites a file.
    ///
    /// Prints the key's securesystemslib keyid, the id in-toto layouts and
    /// DSSE signatures name it by.
    Keygen(KeygenArgs),
    /// Print a readable summary of provenance without verifying it.
    ///
    /// Reads .intoto.jsonl, a bare DSSE envelope, a Sigstore bundle, or -
    /// for stdin; SLSA v1 and v0.2. Shows signer keyids, subjects, builder,
    /// build type, invocation, times, materials and parameters.
    Inspect(InspectArgs),
    /// Run an attested build again from its provenance and say whether
    /// every product is bit-identical; the daemon signs the verdict.
    ///
    /// Verifies the provenance (as verify), gathers the input tree by digest
    /// from --src or the daemon's store (naming every file that differs or is
    /// missing, and running nothing then), re-runs the recorded step, then
    /// reports the rootfs bind by bind and every product. Exit 0 only when
    /// every product is identical; 30 not reproducible, 31 materials, 32
    /// rootfs differs (--require-same-rootfs), 33 the rebuild failed, 34 not
    /// rebuildable, 10-24 the provenance does not verify.
    Rebuild(RebuildArgs),
    /// Internal: `attest verify --policy` evaluates policies in a child
    /// process under a memory limit (client/src/policy.rs).
    #[command(name = "__policy-eval", hide = true)]
    PolicyEval,
}

#[derive(Debug, Args)]
struct RebuildArgs {
    #[command(flatten)]
    socket: SocketArg,
    /// The provenance: .intoto.jsonl, a DSSE envelope, a Sigstore bundle, or - for stdin.
    #[arg(value_name = "PROVENANCE")]
    provenance: PathBuf,
    /// A trusted public key for the provenance, PEM (repeatable).
    #[arg(
        long = "key",
        value_name = "PUB.pem",
        required_unless_present = "dangerously_skip_verify"
    )]
    keys: Vec<PathBuf>,
    /// Require this many distinct trusted signatures on the provenance.
    #[arg(long, default_value_t = 1, value_name = "N")]
    min_signatures: usize,
    /// Rebuild without verifying the provenance. The signed verdict records
    /// it, and `attest verify --require-reproduced-by` does not count it.
    #[arg(long)]
    dangerously_skip_verify: bool,
    /// The source tree; it must hash to the recorded input root. Without
    /// it, the daemon's store must still hold the whole input tree.
    #[arg(long, value_name = "DIR")]
    src: Option<PathBuf>,
    /// Refuse to rebuild when this host's rootfs differs from the recorded one.
    #[arg(long)]
    require_same_rootfs: bool,
    /// Run diffoscope on each differing product (needs the original bytes, see --original).
    #[arg(long)]
    diffoscope: bool,
    /// Where the original products are, at their subject paths. Default:
    /// the provenance file's directory (where `attest run` puts both).
    #[arg(long, value_name = "DIR")]
    original: Option<PathBuf>,
    /// Where the rebuilt products are written.
    #[arg(long, value_name = "DIR", default_value = "rebuilt")]
    out_dir: PathBuf,
    /// Where the signed verdict is written. Default:
    /// <first output's file name>.reproducibility.intoto.jsonl.
    #[arg(long, value_name = "FILE")]
    verdict: Option<PathBuf>,
    /// Print a machine-readable report on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct KeygenArgs {
    /// Key algorithm: ed25519 or ecdsa-p256.
    #[arg(long, default_value = "ed25519", value_name = "ALG")]
    algorithm: attest_provenance::keys::KeyAlgorithm,
    /// Path prefix of the two files.
    #[arg(long, default_value = "attest", value_name = "PREFIX")]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct InspectArgs {
    /// The provenance file, or - for stdin.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Print the summaries (with each whole statement) as a JSON array.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    socket: SocketArg,
    /// The source directory (hashed, uploaded, and the step's working directory).
    #[arg(long, value_name = "DIR")]
    src: PathBuf,
    /// A declared output, relative to the source root (repeatable).
    #[arg(long = "out", value_name = "PATH", required = true)]
    outputs: Vec<String>,
    /// A declared environment variable (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Where the DSSE envelope goes. Default: <first output's file name>.intoto.jsonl.
    #[arg(long, value_name = "FILE")]
    attestation: Option<PathBuf>,
    /// Where products are written locally.
    #[arg(long, value_name = "DIR", default_value = ".")]
    out_dir: PathBuf,
    /// Wall-clock limit, e.g. 90s or 15m (capped by the daemon's maximum).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Memory limit, e.g. 512M (capped by the daemon's maximum).
    #[arg(long, value_name = "SIZE", value_parser = attest_proto::parse_size)]
    memory: Option<u64>,
    /// Process limit (capped by the daemon's maximum).
    #[arg(long, value_name = "N")]
    pids: Option<u64>,
    /// Limit on what the step writes, e.g. 1G (capped by the daemon's maximum).
    #[arg(long, value_name = "SIZE", value_parser = attest_proto::parse_size)]
    max_output: Option<u64>,
    /// Cap on each of the step's logs (stdout, stderr), e.g. 1M: past it the
    /// first and last halves are kept and the middle dropped (capped by the
    /// daemon's maximum).
    #[arg(long, value_name = "SIZE", value_parser = attest_proto::parse_size)]
    max_log: Option<u64>,
    /// CPU-time limit, e.g. 10m.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    cpu_time: Option<Duration>,
    /// Source repository URI, recorded in the provenance.
    #[arg(long, value_name = "URI")]
    source_uri: Option<String>,
    /// Source commit, recorded in the provenance.
    #[arg(long, value_name = "HEX")]
    source_commit: Option<String>,
    /// SOURCE_DATE_EPOCH for the step.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    source_date_epoch: u64,
    /// Do not use the persistent digest cache.
    #[arg(long)]
    no_cache: bool,
    /// No progress display.
    #[arg(long, short)]
    quiet: bool,
    /// Also write the envelope as a Sigstore bundle v0.3
    /// (<name>.sigstore.json beside the .intoto.jsonl), which cosign and
    /// sigstore tooling read; the daemon key's keyid is its public-key hint.
    #[arg(long)]
    bundle: bool,
    /// Also write the step's in-toto link, signed by the daemon, as
    /// <step>.<keyid:8>.link beside the .intoto.jsonl, for in-toto-verify.
    #[arg(long)]
    link: bool,
    /// The in-toto step name of --link (as the layout names the step).
    #[arg(long, value_name = "NAME", default_value = "build", requires = "link")]
    step: String,
    /// A claim about who asked, KEY=VALUE (repeatable; e.g.
    /// ciJobUrl=https://ci.example.org/jobs/42): recorded in the provenance
    /// as externalParameters.requesterClaims, labelled as the client's word.
    /// The daemon records who connected (internalParameters.requester)
    /// separately, whatever this says.
    #[arg(long = "claimed-requester", value_name = "KEY=VALUE", value_parser = parse_env)]
    claimed_requester: Vec<(String, String)>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    #[command(flatten)]
    socket: SocketArg,
    /// Files to verify, or `sha256:HEX` / `sha512:HEX` digests (with
    /// --layout, optional: each must be a product of the layout's last step).
    #[arg(required_unless_present = "layout", value_name = "ARTIFACT")]
    artifacts: Vec<std::ffi::OsString>,
    /// The provenance: .intoto.jsonl, a DSSE envelope, a Sigstore bundle,
    /// or `-` for stdin (repeatable: with --policy, every attestation in
    /// every file that a trusted key signed for the artifacts goes to the
    /// policy).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present_any = ["from_daemon", "layout", "vsa"],
        conflicts_with = "from_daemon"
    )]
    provenance: Vec<PathBuf>,
    /// Fetch the provenance from the daemon by the first artifact's digest
    /// instead of reading --provenance (every attestation it holds for that
    /// digest is tried; the signature is still checked against --key).
    #[arg(long)]
    from_daemon: bool,
    /// A trusted public key, PEM (repeatable).
    #[arg(
        long = "key",
        value_name = "PUB.pem",
        required_unless_present = "layout"
    )]
    keys: Vec<PathBuf>,
    /// Require this many distinct trusted signatures.
    #[arg(long, default_value_t = 1, value_name = "N")]
    min_signatures: usize,
    /// Expected builder id.
    #[arg(long, value_name = "URI")]
    builder_id: Option<String>,
    /// Expected build type.
    #[arg(long, value_name = "URI")]
    build_type: Option<String>,
    /// Expected source repository URI.
    #[arg(long, value_name = "URI")]
    source_uri: Option<String>,
    /// Expected source digest (git commit or tree digest, HEX or ALG:HEX).
    #[arg(long, value_name = "DIGEST")]
    source_digest: Option<String>,
    /// Refuse provenance older than this, e.g. 7d.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    max_age: Option<Duration>,
    /// Require a hermetic build (no network, nothing weakened).
    #[arg(long)]
    require_hermetic: bool,
    /// Require subject names to equal the artifacts' file names too.
    #[arg(long)]
    require_name: bool,
    /// Require the requester the daemon recorded to match this pattern:
    /// a SAN URI, SAN DNS name or `CN=<name>` of its client certificate,
    /// or `uid:<n>` / `user:<name>` of a Unix-socket peer; `*` matches any
    /// run of characters other than `/`. No requester recorded fails.
    #[arg(long, value_name = "PATTERN")]
    requester: Option<String>,
    /// Also require reproducibility verdicts (`attest rebuild`) for every
    /// artifact from rebuilders holding these keys, PEM (repeatable).
    #[arg(
        long = "require-reproduced-by",
        value_name = "PUB.pem",
        requires = "verdicts"
    )]
    reproduced_by: Vec<PathBuf>,
    /// How many distinct rebuilder keys must have signed a reproducible
    /// verdict for each artifact.
    #[arg(
        long,
        default_value_t = 1,
        value_name = "N",
        requires = "reproduced_by"
    )]
    min_rebuilds: usize,
    /// A reproducibility verdict file (repeatable).
    #[arg(long = "verdict", value_name = "FILE", requires = "reproduced_by")]
    verdicts: Vec<PathBuf>,
    /// A Rego policy (package attest; repeatable), evaluated after the
    /// checks above over every attestation that verified for the artifacts:
    /// `allow` must be true and `deny` empty. See docs/policy.md. Exit 30
    /// when the policy refuses, 31 when it cannot be evaluated.
    #[arg(long = "policy", value_name = "FILE.rego")]
    policies: Vec<PathBuf>,
    /// A JSON object the policies see as `data` (allowlists, thresholds).
    #[arg(long, value_name = "FILE.json", requires = "policies")]
    policy_data: Option<PathBuf>,
    /// Time limit of the policy evaluation (memory is limited to 1 GiB).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    policy_timeout: Duration,
    /// Verify an in-toto layout (signed, unexpired, no inspections) over
    /// the links in --links instead of provenance: every step's
    /// functionaries, thresholds and artifact rules. Exit 32 when it fails.
    #[arg(long, value_name = "ROOT.layout", requires_all = ["layout_keys", "links"], conflicts_with_all = ["provenance", "from_daemon", "policies"])]
    layout: Option<PathBuf>,
    /// A public key that must have signed the layout, PEM (repeatable).
    #[arg(long = "layout-key", value_name = "KEY.pub", requires = "layout")]
    layout_keys: Vec<PathBuf>,
    /// The directory holding the steps' `<step>.<keyid:8>.link` files.
    #[arg(long, value_name = "DIR", requires = "layout")]
    links: Option<PathBuf>,
    /// After the policy decided, write a signed SLSA verification summary
    /// (VSA, verification_summary/v1) here: verifier, time, policy digest,
    /// the input attestations' digests, PASSED or FAILED, and the levels
    /// the policy names in `verified_levels`.
    #[arg(long, value_name = "OUT", requires_all = ["policies", "vsa_key"])]
    emit_vsa: Option<PathBuf>,
    /// The private key (PKCS#8 PEM, e.g. from `attest keygen`) that signs --emit-vsa.
    #[arg(long, value_name = "KEY.pem", requires = "emit_vsa")]
    vsa_key: Option<PathBuf>,
    /// The verifier id a VSA names (--emit-vsa) or must name (--vsa).
    #[arg(long, value_name = "URI")]
    verifier_id: Option<String>,
    /// The resource a VSA is about: written by --emit-vsa (default: the
    /// first artifact's name), required to match by --vsa when given.
    #[arg(long, value_name = "URI")]
    resource_uri: Option<String>,
    /// Check a VSA instead of provenance: signed by --key, about every
    /// ARTIFACT, for the policy given by --policy/--policy-data (by digest;
    /// not evaluated), PASSED, and at most --max-age old. Exit 33 when it
    /// does not check out.
    #[arg(long, value_name = "FILE", requires = "policies", conflicts_with_all = ["provenance", "from_daemon", "layout", "emit_vsa"])]
    vsa: Option<PathBuf>,
    /// Print a machine-readable result.
    #[arg(long)]
    json: bool,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not K=V"))?;
    if k.is_empty() {
        return Err(format!("{text:?} has an empty name"));
    }
    Ok((k.to_string(), v.to_string()))
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ATTEST_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Verify(args) => verify_command(args),
        Command::Run(args) => block_on(run_command(args)),
        Command::Pubkey { socket } => block_on(pubkey_command(socket)),
        Command::Keygen(args) => keygen_command(args),
        Command::Inspect(args) => inspect_command(args),
        Command::Rebuild(args) => block_on(rebuild_command(args)),
        Command::PolicyEval => attest::policy::child_main(),
    };
    std::process::exit(code);
}

fn keygen_command(args: KeygenArgs) -> i32 {
    match attest::keygen::keygen(&args.out, args.algorithm) {
        Ok(generated) => {
            eprintln!(
                "attest: private key {} (keep it secret), public key {}",
                generated.private.display(),
                generated.public.display()
            );
            println!("{}", generated.keyid);
            0
        }
        Err(e) => {
            eprintln!("attest keygen: {}", attest::error::chain(&e));
            EXIT_BAD_INPUT
        }
    }
}

fn inspect_command(args: InspectArgs) -> i32 {
    let summaries = read_input(&args.file)
        .and_then(|bytes| attest::inspect::inspect_bytes(&bytes, &args.file.display().to_string()));
    match summaries {
        Ok(summaries) => {
            if args.json {
                println!("{}", serde_json::Value::Array(summaries));
            } else {
                let count = summaries.len();
                for (i, summary) in summaries.iter().enumerate() {
                    if count > 1 {
                        println!("envelope {} of {count}", i + 1);
                    }
                    print!("{}", attest::inspect::render(summary));
                }
            }
            0
        }
        Err(e) => {
            eprintln!("attest inspect: {}", attest::error::chain(&e));
            EXIT_BAD_INPUT
        }
    }
}

/// `attest verify --vsa`: a verification summary instead of provenance.
fn vsa_command(args: &VerifyArgs) -> i32 {
    let bad_input = |e: attest::ClientError| {
        if args.json {
            println!(
                "{}",
                serde_json::json!({"verified": false, "check": "input", "exitCode": EXIT_BAD_INPUT, "error": e.to_string()})
            );
        }
        eprintln!("attest verify: {}", attest::error::chain(&e));
        EXIT_BAD_INPUT
    };
    let Some(vsa) = &args.vsa else {
        return bad_input(attest::ClientError::Invalid(
            "--vsa FILE is required".into(),
        ));
    };
    let inputs = (|| {
        let artifacts = args
            .artifacts
            .iter()
            .map(|a| resolve_artifact(a))
            .collect::<Result<Vec<_>, _>>()?;
        let keys = read_keys(&args.keys)?;
        let envelopes = read_provenance_files(std::slice::from_ref(vsa))?;
        let digest =
            attest::verify::policy_files_digest(&args.policies, args.policy_data.as_deref())?;
        Ok::<_, attest::ClientError>((artifacts, keys, envelopes, digest))
    })();
    let (artifacts, keys, envelopes, digest) = match inputs {
        Ok(i) => i,
        Err(e) => return bad_input(e),
    };
    let expected = attest_provenance::vsa::Expected {
        policy_sha256: digest,
        verifier_id: args.verifier_id.clone(),
        resource_uri: args.resource_uri.clone(),
        max_age: args.max_age,
    };
    match attest_provenance::vsa::verify(
        &envelopes,
        &keys,
        &artifacts,
        &expected,
        std::time::SystemTime::now(),
    ) {
        Ok(v) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"verified": true, "vsa": {"source": v.attestation.source, "signerKeyids": v.attestation.signer_keyids, "verifiedLevels": v.verified_levels}})
                );
            } else {
                println!(
                    "PASSED: vsa {} signed by {} (verified levels: {})",
                    v.attestation.source,
                    v.attestation.signer_keyids.join(", "),
                    v.verified_levels.join(", ")
                );
            }
            0
        }
        Err(e) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"verified": false, "check": "vsa", "exitCode": e.exit_code(), "error": e.to_string()})
                );
            }
            eprintln!("FAILED (vsa): {e}");
            e.exit_code()
        }
    }
}

/// `attest verify --layout`: an in-toto layout over a directory of links.
fn layout_command(args: &VerifyArgs) -> i32 {
    let bad_input = |e: attest::ClientError| {
        if args.json {
            println!(
                "{}",
                serde_json::json!({"verified": false, "check": "input", "exitCode": EXIT_BAD_INPUT, "error": e.to_string()})
            );
        }
        eprintln!("attest verify: {}", attest::error::chain(&e));
        EXIT_BAD_INPUT
    };
    let (Some(layout), Some(links)) = (&args.layout, &args.links) else {
        return bad_input(attest::ClientError::Invalid(
            "--layout needs --layout-key and --links".into(),
        ));
    };
    let inputs = (|| {
        let artifacts = args
            .artifacts
            .iter()
            .map(|a| resolve_artifact(a))
            .collect::<Result<Vec<_>, _>>()?;
        let keys = read_keys(&args.layout_keys)?;
        let layout = read_input(layout)?;
        let links = attest::verify::read_links(links)?;
        Ok::<_, attest::ClientError>((artifacts, keys, layout, links))
    })();
    let (artifacts, keys, layout, links) = match inputs {
        Ok(i) => i,
        Err(e) => return bad_input(e),
    };
    let result = attest_provenance::layout::verify_layout(
        &layout,
        &keys,
        &links,
        std::time::SystemTime::now(),
    )
    .and_then(|v| v.check_artifacts(&artifacts).map(|()| v));
    match result {
        Ok(v) => {
            if args.json {
                let steps: Vec<_> = v
                    .steps
                    .iter()
                    .map(|(s, k)| serde_json::json!({"step": s, "functionaries": k}))
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"verified": true, "layout": {"expires": v.expires, "steps": steps}})
                );
            } else {
                for (step, keyids) in &v.steps {
                    println!("PASSED: step {step} (functionaries {})", keyids.join(", "));
                }
                println!("layout expires {}", v.expires);
            }
            0
        }
        Err(e) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"verified": false, "check": "layout", "exitCode": e.exit_code(), "error": e.to_string()})
                );
            }
            eprintln!("FAILED (layout): {}", attest::error::chain(&e));
            e.exit_code()
        }
    }
}

/// The policy's verdict for a person: every deny message, every
/// attestation left out of the input and why (on stderr, so that with
/// `--json` stdout stays one JSON document).
fn print_policy_outcome(p: &attest::verify::PolicyOutcome, json: bool) {
    if !json {
        for a in &p.attestations {
            println!("policy input: {} ({})", a.source, a.predicate_type);
        }
    }
    for r in &p.rejected {
        eprintln!(
            "not in the policy input: {} ({}): {}",
            r.source,
            r.error.check(),
            r.error
        );
    }
    match &p.decision {
        Ok(d) if d.passed() => {
            if !json {
                println!("POLICY PASSED");
            }
        }
        Ok(d) => {
            for message in &d.deny {
                eprintln!("POLICY DENIED: {message}");
            }
            if !d.allow {
                eprintln!("POLICY REFUSED: data.attest.allow is not true");
            } else {
                eprintln!("POLICY REFUSED: {} deny message(s)", d.deny.len());
            }
        }
        Err(e) => eprintln!("POLICY ERROR: {e}"),
    }
}

fn block_on(future: impl std::future::Future<Output = anyhow::Result<i32>>) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("attest: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(future) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("attest: {e:#}");
            1
        }
    }
}

async fn pubkey_command(socket: SocketArg) -> anyhow::Result<i32> {
    let client = socket.connect().await?;
    for key in client.public_keys().await? {
        print!("{}", key.pem);
    }
    Ok(0)
}

/// Progress bars on stderr (hidden when stderr is not a terminal) and the
/// step's output passed through to our stdout / stderr.
struct TerminalObserver {
    bar: ProgressBar,
}

impl Observer for TerminalObserver {
    fn hashed(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
    fn uploading(&self, blobs: usize, bytes: u64) {
        self.bar.set_message(format!("uploading {blobs} blob(s)"));
        self.bar.set_position(0);
        self.bar.set_length(bytes);
    }
    fn uploaded(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
    fn phase(&self, phase: &str) {
        if phase == "started" {
            self.bar.finish_and_clear();
        } else if !self.bar.is_finished() {
            self.bar.set_message(phase.to_string());
        }
    }
    fn log(&self, stream: LogStream, data: &[u8]) {
        let _ = match stream {
            LogStream::Stdout => std::io::stdout().write_all(data),
            LogStream::Stderr => std::io::stderr().write_all(data),
        };
    }
    fn log_cut(&self, _stream: LogStream, cut: &attest_proto::v1::LogCut) {
        // Said even under --quiet: the log the user saw and the one stored
        // are not all the step wrote.
        eprintln!("attest: {}", attest::run::describe_log_cut(cut));
    }
}

async fn run_command(args: RunArgs) -> anyhow::Result<i32> {
    let client = args.socket.connect().await?;
    let digest_cache = if args.no_cache {
        None
    } else {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|dir| dir.join("attest/digests.bin"))
    };
    let source = (args.source_uri.is_some() || args.source_commit.is_some()).then(|| {
        attest_proto::v1::SourceInfo {
            repository_uri: args.source_uri.clone().unwrap_or_default(),
            commit: args.source_commit.clone().unwrap_or_default(),
            r#ref: String::new(),
        }
    });
    let options = RunOptions {
        src: args.src.clone(),
        outputs: args.outputs.clone(),
        argv: args.command.clone(),
        env: args.env.clone(),
        out_dir: args.out_dir.clone(),
        attestation: args.attestation.clone(),
        limits: attest_proto::v1::Limits {
            timeout_ms: args.timeout.map(|d| d.as_millis() as u64).unwrap_or(0),
            memory_bytes: args.memory.unwrap_or(0),
            pids: args.pids.unwrap_or(0),
            max_output_bytes: args.max_output.unwrap_or(0),
            cpu_time_ms: args.cpu_time.map(|d| d.as_millis() as u64).unwrap_or(0),
            max_log_bytes: args.max_log.unwrap_or(0),
        },
        source,
        source_date_epoch: args.source_date_epoch,
        digest_cache,
        link_name: args.link.then(|| args.step.clone()),
        requester_claims: args.claimed_requester.clone(),
    };
    let bar = ProgressBar::new(0);
    if args.quiet {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:20} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("hashing");
    let observer = Arc::new(TerminalObserver { bar: bar.clone() });
    let summary = match run_build(&client, &options, observer).await {
        Ok(summary) => summary,
        Err(error) => {
            bar.finish_and_clear();
            eprintln!(
                "attest: attest run failed: {}",
                attest::error::chain(&error)
            );
            // A refused request, a daemon fault and anything else exit apart
            // (README, "exit status").
            return Ok(error.run_exit_code());
        }
    };
    bar.finish_and_clear();
    let done = &summary.done;
    if !done.success {
        eprintln!("attest: the build failed: {}", done.message);
        eprintln!(
            "attest: no attestation was written (invocation {})",
            done.invocation_id
        );
        return Ok(if done.suggested_exit_status == 0 {
            1
        } else {
            done.suggested_exit_status
        });
    }
    if !args.quiet {
        eprintln!(
            "attest: {} of {} source file(s) hashed, {} blob(s) / {} uploaded",
            summary.files_read,
            summary.files_total,
            summary.uploaded_blobs,
            bytesize::ByteSize(summary.uploaded_bytes)
        );
        for output in &done.outputs {
            let hash = output
                .digest
                .as_ref()
                .map(|d| d.hash.as_str())
                .unwrap_or("");
            // A path that is not UTF-8 is shown quoted, its odd bytes escaped.
            let path = if output.raw_path.is_empty() {
                output.path.clone()
            } else {
                format!(
                    "{:?}",
                    <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&output.raw_path)
                )
            };
            eprintln!("attest: product {path} sha256:{hash}");
        }
        if let Some(path) = &summary.attestation {
            eprintln!(
                "attest: provenance written to {} (invocation {})",
                path.display(),
                done.invocation_id
            );
        }
    }
    if let (true, Some(attestation)) = (args.bundle || args.link, &summary.attestation) {
        let keys = sidecar::daemon_keys(&client.public_keys().await?)?;
        let dir = attestation
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if args.bundle {
            let path = sidecar::bundle_path(attestation);
            sidecar::write_bundle(&done.envelope, &keys, &path)
                .context("cannot write the sigstore bundle")?;
            if !args.quiet {
                eprintln!("attest: sigstore bundle written to {}", path.display());
            }
        }
        if args.link {
            let path = sidecar::write_link(&done.link, &args.step, &keys, dir)
                .context("cannot write the in-toto link")?;
            if !args.quiet {
                eprintln!("attest: in-toto link written to {}", path.display());
            }
        }
    }
    Ok(0)
}

async fn rebuild_command(args: RebuildArgs) -> anyhow::Result<i32> {
    use attest::rebuild::{rebuild, RebuildOptions};
    let keys = if args.keys.is_empty() {
        Vec::new()
    } else {
        match attest::verify::read_keys(&args.keys) {
            Ok(keys) => keys,
            Err(e) => {
                eprintln!("attest rebuild: {}", attest::error::chain(&e));
                return Ok(EXIT_BAD_INPUT);
            }
        }
    };
    if args.dangerously_skip_verify {
        eprintln!("attest rebuild: WARNING: --dangerously-skip-verify: the provenance is not verified; the verdict records it");
    }
    let original_dir = args.original.clone().unwrap_or_else(|| {
        args.provenance
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
    });
    let options = RebuildOptions {
        provenance: args.provenance.clone(),
        keys,
        min_signatures: args.min_signatures,
        dangerously_skip_verify: args.dangerously_skip_verify,
        src: args.src.clone(),
        require_same_rootfs: args.require_same_rootfs,
        diffoscope: args.diffoscope,
        original_dir,
        out_dir: args.out_dir.clone(),
        verdict: args.verdict.clone(),
    };
    let client = args.socket.connect().await?;
    // The step's output goes to stderr, so that --json's stdout stays one document.
    let log = |data: &[u8]| {
        let _ = std::io::stderr().write_all(data);
    };
    match rebuild(&client, &options, &log).await {
        Ok(report) => {
            if args.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.render());
            }
            Ok(report.exit_code())
        }
        Err(error) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"reproducible": false, "exitCode": error.exit_code(), "error": attest::error::chain(&error)})
                );
            }
            eprintln!("attest rebuild: {}", attest::error::chain(&error));
            Ok(error.exit_code())
        }
    }
}

/// The envelopes the daemon holds for a digest.
async fn envelopes_from_daemon(
    socket: &SocketArg,
    sha256: &str,
) -> Result<Vec<attest_provenance::dsse::Envelope>, attest::ClientError> {
    let client = socket.connect().await?;
    let mut envelopes = Vec::new();
    for found in client.attestations_for(sha256).await? {
        envelopes.extend(
            attest_provenance::dsse::read_envelopes(&found.envelope).map_err(|e| {
                attest::ClientError::Protocol(format!("attestation {}: {e}", found.invocation_id))
            })?,
        );
    }
    Ok(envelopes)
}

fn verify_command(args: VerifyArgs) -> i32 {
    if args.layout.is_some() {
        return layout_command(&args);
    }
    if args.vsa.is_some() {
        return vsa_command(&args);
    }
    let inputs = (|| {
        let artifacts = args
            .artifacts
            .iter()
            .map(|a| resolve_artifact(a))
            .collect::<Result<Vec<_>, _>>()?;
        let keys = read_keys(&args.keys)?;
        let envelopes = match args.provenance.is_empty() {
            false => read_provenance_files(&args.provenance)?,
            true => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(attest::ClientError::io(
                        "start runtime for",
                        "--from-daemon",
                    ))?;
                // The daemon indexes attestations by sha256 only.
                if artifacts[0].sha256.is_empty() {
                    return Err(attest::ClientError::Invalid(format!(
                        "--from-daemon looks attestations up by sha256; {} names only a sha512",
                        artifacts[0].name
                    )));
                }
                runtime
                    .block_on(envelopes_from_daemon(&args.socket, &artifacts[0].sha256))?
                    .into_iter()
                    .enumerate()
                    .map(|(i, e)| (format!("daemon#{}", i + 1), e))
                    .collect()
            }
        };
        let policies = read_policies(&args.policies)?;
        let policy_data = args
            .policy_data
            .as_deref()
            .map(read_policy_data)
            .transpose()?;
        Ok::<_, attest::ClientError>((artifacts, keys, envelopes, policies, policy_data))
    })();
    let (artifacts, keys, sourced, policies, policy_data) = match inputs {
        Ok(inputs) => inputs,
        Err(e) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"verified": false, "check": "input", "exitCode": EXIT_BAD_INPUT, "error": e.to_string()})
                );
            }
            eprintln!("attest verify: {}", attest::error::chain(&e));
            return EXIT_BAD_INPUT;
        }
    };
    let expect = Expectations {
        builder_id: args.builder_id,
        build_type: args.build_type,
        source_uri: args.source_uri,
        source_digest: args.source_digest,
        max_age: args.max_age,
        require_hermetic: args.require_hermetic,
        min_signatures: args.min_signatures,
        require_name: args.require_name,
        requester: args.requester,
    };
    let envelopes: Vec<_> = sourced.iter().map(|(_, e)| e.clone()).collect();
    let now = std::time::SystemTime::now();
    let verified = verify(&envelopes, &keys, &artifacts, &expect);
    // Reproducibility verdicts are checked only for provenance that passed.
    let reproduced = match (&verified, args.reproduced_by.is_empty()) {
        (Ok(_), false) => Some(attest::rebuild::check_reproduced_by(
            &args.verdicts,
            &args.reproduced_by,
            &artifacts,
            args.min_rebuilds,
        )),
        _ => None,
    };
    if let Some(Err(error)) = &reproduced {
        if args.json {
            println!(
                "{}",
                serde_json::json!({"verified": false, "check": "reproduced-by", "exitCode": error.exit_code(), "error": attest::error::chain(error)})
            );
        }
        eprintln!("FAILED (reproduced by): {}", attest::error::chain(error));
        return error.exit_code();
    }
    match verified {
        Ok(verified) => {
            if let Some(Ok(vouched)) = &reproduced {
                if !args.json {
                    for (name, keyids) in vouched {
                        println!("REPRODUCED: {name} by {}", keyids.join(", "));
                    }
                }
            }
            // The policy runs only after the signature, subject and
            // expectation checks passed: it adds refusals, never passes.
            let policy = (!policies.is_empty()).then(|| {
                let limits = attest_provenance::policy::Limits {
                    time: args.policy_timeout,
                    ..Default::default()
                };
                run_policy(
                    &sourced,
                    &keys,
                    &artifacts,
                    args.min_signatures,
                    &policies,
                    policy_data.as_ref(),
                    limits,
                    now,
                )
            });
            let mut code = match policy.as_ref().map(|p| &p.decision) {
                None => 0,
                Some(Ok(d)) if d.passed() => 0,
                Some(Ok(_)) => attest_provenance::policy::EXIT_POLICY_REFUSED,
                Some(Err(e)) => e.exit_code(),
            };
            // A VSA records a decision, PASSED or FAILED; a policy that
            // could not be evaluated decided nothing, so none is written.
            if let (Some(out), Some(p)) = (&args.emit_vsa, &policy) {
                if let Ok(decision) = &p.decision {
                    let written = attest::verify::emit_vsa(
                        out,
                        args.vsa_key.as_deref(),
                        &args.policies,
                        args.policy_data.as_deref(),
                        attest::verify::VsaFields {
                            verifier_id: args.verifier_id.clone(),
                            resource_uri: args.resource_uri.clone(),
                            now,
                        },
                        &artifacts,
                        p,
                        decision,
                    );
                    match written {
                        Ok(()) => {
                            if !args.json {
                                println!("vsa written to {}", out.display());
                            }
                        }
                        Err(e) => {
                            eprintln!("attest verify: --emit-vsa: {}", attest::error::chain(&e));
                            code = EXIT_BAD_INPUT;
                        }
                    }
                }
            }
            if args.json {
                let matched: Vec<_> = verified
                    .matched
                    .iter()
                    .map(|(a, subject)| serde_json::json!({"artifact": a.name, "digest": a.digest_display(), "subject": subject}))
                    .collect();
                let reproduced_by: Vec<_> = match &reproduced {
                    Some(Ok(vouched)) => vouched
                        .iter()
                        .map(|(name, keyids)| serde_json::json!({"artifact": name, "rebuilderKeyids": keyids}))
                        .collect(),
                    _ => Vec::new(),
                };
                let mut report = serde_json::json!({"verified": code == 0, "signerKeyids": verified.signer_keyids, "matched": matched, "reproducedBy": reproduced_by});
                if let Some(p) = &policy {
                    report["policy"] = p.to_json();
                    if code != 0 {
                        report["check"] = "policy".into();
                        report["exitCode"] = code.into();
                    }
                }
                println!("{report}");
            } else {
                for (artifact, subject) in &verified.matched {
                    println!(
                        "PASSED: {} ({}) is subject {:?}",
                        artifact.name,
                        artifact.digest_display(),
                        subject
                    );
                }
                println!("signed by: {}", verified.signer_keyids.join(", "));
            }
            if let Some(p) = &policy {
                print_policy_outcome(p, args.json);
            }
            code
        }
        Err(error) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"verified": false, "step": error.step(), "check": error.check(), "exitCode": error.exit_code(), "error": error.to_string()})
                );
            }
            eprintln!("FAILED (step {}, {}): {error}", error.step(), error.check());
            error.exit_code()
        }
    }
}
