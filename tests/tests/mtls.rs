//! TCP with mutual TLS, `--allow-client`, and the requester each
//! provenance records: a real daemon, certificates from a throw-away CA
//! made here with rcgen, the real `attest` binary and library.

use attest_e2e::{run, TestDaemon};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const RUNNER_ID: &str = "spiffe://example.org/runner/7";

/// A CA: its certificate and key, to sign others with.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// Signs a leaf; returns (certificate PEM, key PEM, certificate DER).
    fn sign(&self, mut params: CertificateParams) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

fn client_params(uri: &str, cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

/// PEM files in `dir`: a key file is 0600, as the daemon requires.
fn write_pair(
    dir: &Path,
    name: &str,
    (cert, key, _): &(String, String, Vec<u8>),
) -> (PathBuf, PathBuf) {
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (cert_path, key_path)
}

/// The certificates of one test: a CA for the server and clients, the
/// server's pair, the runner's pair.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    ca_pem: PathBuf,
    server: (PathBuf, PathBuf),
    runner: (PathBuf, PathBuf),
    runner_der: Vec<u8>,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("attestd test ca");
        let ca_pem = dir.path().join("ca.crt");
        std::fs::write(&ca_pem, ca.cert.pem()).unwrap();
        let mut server = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        server
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = write_pair(dir.path(), "server", &ca.sign(server));
        let runner_signed = ca.sign(client_params(RUNNER_ID, "runner 7"));
        let runner = write_pair(dir.path(), "runner", &runner_signed);
        Pki {
            dir,
            ca,
            ca_pem,
            server,
            runner,
            runner_der: runner_signed.2,
        }
    }

    /// attestd flags for an mTLS listener on `addr`.
    fn daemon_args(&self, addr: &str) -> Vec<String> {
        vec![
            "--listen".into(),
            format!("tcp://{addr}"),
            "--tls-cert".into(),
            self.server.0.display().to_string(),
            "--tls-key".into(),
            self.server.1.display().to_string(),
            "--client-ca".into(),
            self.ca_pem.display().to_string(),
        ]
    }
}

/// A loopback address with a port the kernel chose (bound, then released
/// for the daemon to bind).
fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

fn start(pki: &Pki, extra: &[&str]) -> (TestDaemon, String) {
    let addr = free_addr();
    let mut args = pki.daemon_args(&addr);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = TestDaemon::start_with(&args);
    // The socket answers first; the TCP listener is bound just after.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "no TCP listener:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (daemon, format!("https://{addr}"))
}

/// `attest ARGS` against `endpoint` with the given client pair.
fn attest_tcp(
    daemon: &TestDaemon,
    endpoint: &str,
    ca: &Path,
    pair: &(PathBuf, PathBuf),
) -> Command {
    let mut command = daemon.attest();
    command
        .env("ATTEST_ENDPOINT", endpoint)
        .env("ATTEST_TLS_CA", ca)
        .env("ATTEST_TLS_CERT", &pair.0)
        .env("ATTEST_TLS_KEY", &pair.1);
    command
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn requester_of(envelope: &Path) -> serde_json::Value {
    let line = std::fs::read_to_string(envelope).unwrap();
    let envelope: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    use base64::Engine;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    let statement: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    statement["predicate"]["buildDefinition"]["internalParameters"]["requester"].clone()
}

fn small_src(daemon: &TestDaemon) -> PathBuf {
    let src = daemon.work_dir("src");
    std::fs::write(src.join("in.txt"), "attested over mTLS\n").unwrap();
    src
}

#[test]
fn a_build_over_mtls_verifies_and_its_provenance_names_the_client_certificate() {
    let pki = Pki::new();
    let (daemon, endpoint) = start(&pki, &[]);
    let src = small_src(&daemon);
    let work = daemon.work_dir("work");
    let built = run(attest_tcp(&daemon, &endpoint, &pki.ca_pem, &pki.runner)
        .current_dir(&work)
        .args(["run", "--quiet", "--src"])
        .arg(&src)
        .args([
            "--out",
            "out.txt",
            // The client's word, recorded apart from what the daemon saw.
            "--claimed-requester",
            "ciJobUrl=https://ci.example.org/jobs/42",
            "--",
            "cp",
            "in.txt",
            "out.txt",
        ]));
    assert!(built.status.success(), "{}", daemon.log());
    assert!(
        base64_payload(&std::fs::read_to_string(work.join("out.txt.intoto.jsonl")).unwrap())
            .contains("\"requesterClaims\":{\"ciJobUrl\":\"https://ci.example.org/jobs/42\"}")
    );
    // The product came back over TCP, checked against its digest.
    assert_eq!(
        std::fs::read_to_string(work.join("out.txt")).unwrap(),
        "attested over mTLS\n"
    );

    let requester = requester_of(&work.join("out.txt.intoto.jsonl"));
    assert_eq!(requester["transport"], "mtls");
    assert_eq!(
        requester["certificate"]["uris"],
        serde_json::json!([RUNNER_ID])
    );
    assert_eq!(requester["certificate"]["commonName"], "runner 7");
    assert_eq!(requester["certificate"]["subject"], "CN=runner 7");
    assert_eq!(
        requester["certificate"]["sha256"],
        hex::encode(ring::digest::digest(&ring::digest::SHA256, &pki.runner_der))
    );

    let pubkey = run(attest_tcp(&daemon, &endpoint, &pki.ca_pem, &pki.runner).arg("pubkey"));
    assert!(pubkey.status.success());
    std::fs::write(work.join("key.pem"), &pubkey.stdout).unwrap();
    let verify = |pattern: &str| {
        run(Command::new(attest_e2e::bin("attest"))
            .current_dir(&work)
            .args([
                "verify",
                "out.txt",
                "--provenance",
                "out.txt.intoto.jsonl",
                "--key",
                "key.pem",
                "--require-hermetic",
                "--requester",
                pattern,
            ]))
    };
    assert_eq!(
        verify("spiffe://example.org/runner/*").status.code(),
        Some(0)
    );
    assert_eq!(verify("CN=runner 7").status.code(), Some(0));
    let other = verify("spiffe://example.org/admin/*");
    assert_eq!(other.status.code(), Some(26));
    assert!(
        stderr(&other).contains(
            "expected a requester matching \"spiffe://example.org/admin/*\", found spiffe://example.org/runner/7, CN=runner 7"
        ),
        "{}",
        stderr(&other)
    );

    let inspect = run(Command::new(attest_e2e::bin("attest"))
        .current_dir(&work)
        .args(["inspect", "out.txt.intoto.jsonl"]));
    assert!(String::from_utf8_lossy(&inspect.stdout)
        .contains("requested by:   mtls: spiffe://example.org/runner/7, CN=runner 7"));
}

#[test]
fn clients_without_a_trusted_valid_allowed_certificate_are_refused() {
    let pki = Pki::new();
    let (daemon, endpoint) = start(&pki, &["--allow-client", "spiffe://example.org/runner/*"]);
    let dir = pki.dir.path();

    // An identity outside --allow-client: verified, then refused by name.
    let admin = write_pair(
        dir,
        "admin",
        &pki.ca
            .sign(client_params("spiffe://example.org/admin/1", "admin")),
    );
    let refused = run(attest_tcp(&daemon, &endpoint, &pki.ca_pem, &admin).arg("pubkey"));
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("client spiffe://example.org/admin/1, CN=admin (certificate sha256:")
            && stderr(&refused).contains("is not allowed to request builds")
            // PERMISSION_DENIED, as tonic words it.
            && stderr(&refused).contains("The caller does not have permission"),
        "{}",
        stderr(&refused)
    );
    assert!(daemon
        .log()
        .contains("TCP client refused by --allow-client"));

    // A certificate another CA signed.
    let rogue = Ca::new("rogue ca");
    let untrusted = write_pair(
        dir,
        "untrusted",
        &rogue.sign(client_params(RUNNER_ID, "runner 7")),
    );
    let refused = run(attest_tcp(&daemon, &endpoint, &pki.ca_pem, &untrusted).arg("pubkey"));
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains(
            "the client certificate was refused: invalid peer certificate: UnknownIssuer"
        ) && stderr(&refused).contains("does not have valid authentication credentials"),
        "{}",
        stderr(&refused)
    );

    // The right CA, expired.
    let mut params = client_params(RUNNER_ID, "runner 7");
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let expired = write_pair(dir, "expired", &pki.ca.sign(params));
    let refused = run(attest_tcp(&daemon, &endpoint, &pki.ca_pem, &expired).arg("pubkey"));
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains(
            "the client certificate was refused: invalid peer certificate: certificate expired"
        ),
        "{}",
        stderr(&refused)
    );

    // No client certificate at all (the CLI always sends one: the library).
    let no_cert = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(
            tonic::transport::Certificate::from_pem(std::fs::read(&pki.ca_pem).unwrap()),
        );
        let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await;
        match channel {
            Err(e) => attest::error::chain(&e),
            Ok(channel) => {
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                match health
                    .check(tonic_health::pb::HealthCheckRequest::default())
                    .await
                {
                    Ok(answer) => panic!("served without a client certificate: {answer:?}"),
                    Err(status) => {
                        assert_eq!(status.code(), tonic::Code::Unauthenticated);
                        status.message().to_string()
                    }
                }
            }
        }
    });
    assert_eq!(
        no_cert,
        "no client certificate was presented; this daemon's TCP listeners require one its --client-ca signed"
    );

    // The allowed runner still gets through.
    let ok = run(attest_tcp(&daemon, &endpoint, &pki.ca_pem, &pki.runner).arg("pubkey"));
    assert!(ok.status.success(), "{}", daemon.log());
}

#[test]
fn a_tls_key_that_group_or_others_can_read_is_refused_at_start() {
    let pki = Pki::new();
    std::fs::set_permissions(&pki.server.1, std::fs::Permissions::from_mode(0o640)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = run(Command::new(attest_e2e::bin("attestd"))
        .args(pki.daemon_args(&free_addr()))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .args(["--config", "/dev/null"])
        .arg("--sandbox-helper")
        .arg(attest_e2e::bin("attestd-sandbox")));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "the TLS key {} is readable by group or others (mode 640)",
            pki.server.1.display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("s.sock").exists());
}

/// The gid this process runs as, from /proc (the tests use no libc).
fn own_gid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Gid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_socket_the_provenance_records_the_peers_uid_gid_and_pid() {
    let daemon = TestDaemon::start();
    let src = small_src(&daemon);
    let client = attest::Client::connect(&daemon.socket).await.unwrap();
    let tree = attest_e2e::upload_tree(&client, &src).await;
    let mut events = client
        .build(attest_proto::v1::BuildRequest {
            input_root: Some(tree.root.to_proto()),
            argv: vec!["cp".into(), "in.txt".into(), "out.txt".into()],
            output_paths: vec!["out.txt".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut envelope = Vec::new();
    while let Some(event) = events.message().await.unwrap() {
        if let Some(attest_proto::v1::build_event::Event::Done(done)) = event.event {
            assert!(done.success, "{}", done.message);
            envelope = done.envelope;
        }
    }
    let path = daemon.work_dir("w").join("out.intoto.jsonl");
    std::fs::write(&path, &envelope).unwrap();
    let requester = requester_of(&path);
    assert_eq!(requester["transport"], "unix");
    // This very process connected: its pid, not the daemon's or a child's.
    assert_eq!(requester["pid"], std::process::id());
    assert_eq!(requester["uid"], attest_proto::current_uid());
    assert_eq!(requester["gid"], own_gid());
    if attest_proto::current_uid() == 0 {
        assert_eq!(requester["user"], "root");
    }
}

#[test]
fn a_plaintext_tcp_listener_is_recorded_in_the_provenance_and_fails_require_hermetic() {
    let addr = free_addr();
    let listen = format!("tcp://{addr}");
    let daemon =
        TestDaemon::start_with(&["--listen", &listen, "--dangerously-allow-plaintext-tcp"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "no TCP listener:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let src = small_src(&daemon);
    let work = daemon.work_dir("work");
    let built = run(daemon
        .attest()
        .env("ATTEST_ENDPOINT", format!("http://{addr}"))
        .current_dir(&work)
        .args(["run", "--quiet", "--src"])
        .arg(&src)
        .args(["--out", "out.txt", "--", "cp", "in.txt", "out.txt"]));
    assert!(built.status.success(), "{}", daemon.log());
    let envelope = work.join("out.txt.intoto.jsonl");
    let requester = requester_of(&envelope);
    assert_eq!(requester["transport"], "tcp-plaintext");
    let line = std::fs::read_to_string(&envelope).unwrap();
    assert!(base64_payload(&line)
        .contains("\"dangerousOptions\":[\"--dangerously-allow-plaintext-tcp\"]"));
    // The daemon's key, fetched over the socket.
    let pubkey = run(daemon.attest().arg("pubkey"));
    std::fs::write(work.join("key.pem"), &pubkey.stdout).unwrap();
    let verify = |extra: &[&str]| {
        run(Command::new(attest_e2e::bin("attest"))
            .current_dir(&work)
            .args([
                "verify",
                "out.txt",
                "--provenance",
                "out.txt.intoto.jsonl",
                "--key",
                "key.pem",
            ])
            .args(extra))
    };
    assert_eq!(verify(&[]).status.code(), Some(0));
    assert_eq!(verify(&["--require-hermetic"]).status.code(), Some(19));
    // A plaintext peer has no identity any pattern could match.
    assert_eq!(verify(&["--requester", "*"]).status.code(), Some(26));
}

fn base64_payload(line: &str) -> String {
    use base64::Engine;
    let envelope: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(envelope["payload"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap()
}
