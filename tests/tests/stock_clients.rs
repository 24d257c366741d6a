//! Stock gRPC clients, with their default options, against a real attestd
//! over its Unix socket: Python `grpcio` (a default channel, stubs
//! generated from `proto/` at run time, and the example runner
//! `examples/clients/python/attest_runner.py`), Node `@grpc/grpc-js`, the
//! Rust `h2` client, and a frame-level HTTP/2 client sending every
//! `:authority` form real clients send.
//!
//! Before the daemon rewrote unparsable `:authority` values on Unix-socket
//! connections (`daemon/src/uds_authority.rs`), grpcio's every call and the
//! raw path, percent-encoded and empty forms were reset by h2 with
//! `RST_STREAM (PROTOCOL_ERROR)`; grpc-js, h2 and the `localhost` and
//! absent forms worked and must keep working.
//!
//! A test whose tool is missing fails when `CI` is set, naming the install
//! command, and prints "skipped: ..." otherwise.
#![forbid(unsafe_code)]

use attest_e2e::{repo_root, run, TestDaemon};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::process::Command;

const PIP_INSTALL: &str =
    "python3 -m pip install -r tests/interop/requirements.txt (scripts/test.sh does it)";
/// What .ci/run runs when node is missing.
const NODE_INSTALL: &str = "apt-get install -y nodejs npm";

/// A missing tool: a failure in CI, a skip elsewhere.
fn missing_tool(what: &str, install: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{what} is missing: install it with `{install}`");
    }
    eprintln!("skipped: {what} is missing (install it with `{install}`)");
}

/// The Python interpreter with grpcio, grpcio-tools, grpcio-health-checking
/// and grpcio-reflection: `ATTEST_PYTHON`, else `python3`.
fn python() -> Option<OsString> {
    let python = std::env::var_os("ATTEST_PYTHON").unwrap_or_else(|| "python3".into());
    let probe = Command::new(&python)
        .args([
            "-c",
            "import grpc, grpc_tools.protoc, grpc_health.v1.health_pb2, grpc_reflection.v1alpha.reflection_pb2",
        ])
        .output();
    match probe {
        Ok(output) if output.status.success() => Some(python),
        _ => {
            missing_tool(
                &format!(
                    "{} with grpcio, grpcio-tools, grpcio-health-checking and grpcio-reflection",
                    python.to_string_lossy()
                ),
                PIP_INSTALL,
            );
            None
        }
    }
}

/// `node`, with the pinned packages of tests/stock-clients/node installed
/// (`npm ci` when node_modules is missing).
fn node() -> Option<PathBuf> {
    let dir = repo_root().join("tests/stock-clients/node");
    let works = |program: &str| {
        Command::new(program)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !works("node") || !works("npm") {
        missing_tool("node and npm", NODE_INSTALL);
        return None;
    }
    if !dir.join("node_modules/@grpc/grpc-js").exists() {
        let output = run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir));
        assert!(
            output.status.success(),
            "npm ci in {} failed",
            dir.display()
        );
    }
    Some(dir)
}

fn json(stdout: &[u8]) -> serde_json::Value {
    serde_json::from_slice(stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON object ({e}): {}",
            String::from_utf8_lossy(stdout)
        )
    })
}

fn daemon_pubkey(daemon: &TestDaemon) -> Vec<u8> {
    let output = run(daemon.attest().arg("pubkey"));
    assert!(output.status.success(), "attest pubkey");
    output.stdout
}

#[test]
fn grpcio_default_channel_gets_health_reflection_and_keys() {
    let Some(python) = python() else { return };
    let daemon = TestDaemon::start();
    let pem = daemon.dir.path().join("grpcio.pub.pem");
    let output = run(Command::new(&python)
        .arg(repo_root().join("tests/stock-clients/python/stock_client.py"))
        .arg(&daemon.socket)
        .arg(repo_root().join("proto"))
        .arg(&pem));
    assert!(
        output.status.success(),
        "the grpcio client failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reply = json(&output.stdout);
    for service in [
        "",
        "attest.v1.Build",
        "attest.v1.ContentStore",
        "attest.v1.Keys",
    ] {
        assert_eq!(reply["health"][service], "SERVING", "health of {service:?}");
    }
    let services: BTreeSet<&str> = reply["services"]
        .as_array()
        .expect("a list of services")
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    for expected in [
        "attest.v1.Attestations",
        "attest.v1.Build",
        "attest.v1.ContentStore",
        "attest.v1.Keys",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.contains(expected),
            "{expected} not listed by reflection: {services:?}"
        );
    }
    assert_eq!(reply["keys"][0]["algorithm"], "ed25519");
    assert_eq!(
        std::fs::read(&pem).expect("the PEM grpcio fetched"),
        daemon_pubkey(&daemon),
        "grpcio's Keys reply and `attest pubkey` agree"
    );
}

/// The example runner builds a tree with a subdirectory, an executable,
/// an empty file, a symlink and a name that is not UTF-8; the daemon must
/// agree with its Merkle tree (same root digest as attest-tree's) and the
/// envelope it writes must pass `attest verify`.
#[test]
fn python_runner_builds_and_its_envelope_verifies() {
    let Some(python) = python() else { return };
    let daemon = TestDaemon::start();
    let work = daemon.work_dir("runner");
    let src = work.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("in.txt"), "hello\n").unwrap();
    std::fs::write(src.join("sub/tool.sh"), "#!/bin/sh\necho tool\n").unwrap();
    std::fs::set_permissions(
        src.join("sub/tool.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(src.join("empty"), "").unwrap();
    std::os::unix::fs::symlink("in.txt", src.join("link")).unwrap();
    let not_utf8 = OsString::from_vec(b"caf\xe9.txt".to_vec());
    std::fs::write(src.join(&not_utf8), "latin-1 name\n").unwrap();
    let expected_root = attest_tree::build_tree(&src, None, &|_| {})
        .expect("hash the tree in Rust")
        .root;

    let runner = |attestation: &str| {
        run(Command::new(&python)
            .current_dir(&work)
            .arg(repo_root().join("examples/clients/python/attest_runner.py"))
            .arg("--socket")
            .arg(&daemon.socket)
            .args([
                "--src",
                "src",
                "--out",
                "dist",
                "--out",
                "copy.txt",
                "--out-dir",
                "out",
            ])
            .args(["--attestation", attestation, "--"])
            .args([
                "sh",
                "-c",
                "mkdir -p dist && tr a-z A-Z < in.txt > dist/UP.txt && cp in.txt copy.txt \
                 && sub/tool.sh && echo runner-stdout && echo runner-stderr >&2",
            ]))
    };
    let output = runner("run.intoto.jsonl");
    assert!(output.status.success(), "the runner failed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stdout.contains("tool\n") && stdout.contains("runner-stdout"),
        "step stdout streamed: {stdout}"
    );
    assert!(
        stderr.contains("runner-stderr"),
        "step stderr streamed: {stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "input root {}/{}",
            expected_root.hex(),
            expected_root.size
        )),
        "the runner's root digest is attest-tree's {expected_root}: {stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(work.join("out/dist/UP.txt")).unwrap(),
        "HELLO\n"
    );
    assert_eq!(
        std::fs::read_to_string(work.join("out/copy.txt")).unwrap(),
        "hello\n"
    );

    let key = work.join("daemon.pub.pem");
    std::fs::write(&key, daemon_pubkey(&daemon)).unwrap();
    let verify = run(daemon
        .attest()
        .current_dir(&work)
        .args([
            "verify",
            "out/dist/UP.txt",
            "out/copy.txt",
            "--provenance",
            "run.intoto.jsonl",
            "--key",
        ])
        .arg(&key));
    assert!(
        verify.status.success(),
        "attest verify of the runner's envelope"
    );

    // Unchanged tree: FindMissingBlobs answers that nothing is missing.
    let again = runner("again.intoto.jsonl");
    assert!(again.status.success(), "the second run failed");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains(", 0 blobs uploaded"),
        "nothing uploaded the second time"
    );
}

#[test]
fn python_runner_refuses_output_paths_that_leave_out_dir() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    std::os::unix::fs::symlink("/tmp", dir.path().join("out/escape")).unwrap();
    let script = r#"
import sys
sys.path.insert(0, sys.argv[1])
import attest_runner
out = sys.argv[2]
for path in [b"../x", b"/etc/x", b"a/../../x", b"a//b", b"./x", b"", b"escape/x"]:
    try:
        attest_runner.safe_destination(out, path)
        print("accepted", path)
    except SystemExit as refusal:
        print("refused", path, refusal)
print("kept", attest_runner.safe_destination(out, b"dir/file.txt").decode())
"#;
    let output = run(Command::new(&python)
        .args(["-c", script])
        .arg(repo_root().join("examples/clients/python"))
        .arg(dir.path().join("out")));
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("accepted"), "{stdout}");
    assert_eq!(stdout.matches("refused").count(), 7, "{stdout}");
    let kept = std::fs::canonicalize(dir.path().join("out"))
        .unwrap()
        .join("dir/file.txt");
    assert!(
        stdout.contains(&format!("kept {}", kept.display())),
        "{stdout}"
    );
}

#[test]
fn grpc_js_default_options_health_keys_and_build() {
    let Some(node_dir) = node() else { return };
    let daemon = TestDaemon::start();
    let work = daemon.work_dir("node");
    std::fs::create_dir_all(work.join("src/sub")).unwrap();
    std::fs::write(work.join("src/in.txt"), "from node\n").unwrap();
    std::fs::write(work.join("src/sub/b.txt"), "b\n").unwrap();
    std::fs::write(work.join("src/empty"), "").unwrap();
    std::os::unix::fs::symlink("in.txt", work.join("src/link")).unwrap();
    let expected_root = attest_tree::build_tree(&work.join("src"), None, &|_| {})
        .expect("hash the tree in Rust")
        .root;
    let output = run(Command::new("node")
        .arg(node_dir.join("stock_client.js"))
        .arg(&daemon.socket)
        .arg(repo_root().join("proto"))
        .arg(&work));
    assert!(output.status.success(), "the grpc-js client failed");
    let reply = json(&output.stdout);
    for service in ["", "attest.v1.Build", "attest.v1.Keys"] {
        assert_eq!(reply["health"][service], "SERVING", "health of {service:?}");
    }
    assert_eq!(
        reply["input_root"],
        expected_root.hex(),
        "grpc-js hashed the tree as attest-tree does"
    );
    assert_eq!(reply["stdout"], "node-stdout\n");
    assert_eq!(reply["stderr"], "node-stderr\n");
    assert_eq!(reply["outputs"][0], "up.txt");
    assert_eq!(
        std::fs::read_to_string(work.join("out/up.txt")).unwrap(),
        "FROM NODE\n"
    );
    assert_eq!(
        std::fs::read(work.join("node.pub.pem")).unwrap(),
        daemon_pubkey(&daemon)
    );
    let verify = run(daemon.attest().current_dir(&work).args([
        "verify",
        "out/up.txt",
        "--provenance",
        "node.intoto.jsonl",
        "--key",
        "node.pub.pem",
    ]));
    assert!(
        verify.status.success(),
        "attest verify of grpc-js's envelope"
    );
}

/// The `:authority` forms clients send over a Unix socket, each checked
/// twice on one connection (the second request mostly references the
/// first's entries in the HPACK dynamic table).
#[test]
fn raw_http2_every_authority_form_gets_serving() {
    let daemon = TestDaemon::start();
    let path = daemon
        .socket
        .to_str()
        .expect("a UTF-8 socket path")
        .as_bytes();
    let forms: [(&str, Option<Vec<u8>>); 5] = [
        ("localhost (grpc-go, grpc-js)", Some(b"localhost".to_vec())),
        ("the raw socket path (grpc-java)", Some(path.to_vec())),
        (
            "the percent-encoded path (grpcio, grpc-core)",
            Some(percent_encode(path)),
        ),
        ("empty", Some(Vec::new())),
        ("absent", None),
    ];
    let mut failures = Vec::new();
    for (name, authority) in &forms {
        match raw_h2::health_checks(&daemon.socket, authority.as_deref(), 2) {
            Ok(statuses) if statuses == [1, 1] => {}
            Ok(statuses) => failures.push(format!("{name}: statuses {statuses:?}, not SERVING")),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "health checks failed:\n{}",
        failures.join("\n")
    );
}

/// The `h2` crate's client (tonic's own transport: Huffman coding and its
/// dynamic table) with `localhost`, which must still pass untouched. Its
/// `http::Uri` refuses the other forms, hence the frame-level client above.
#[tokio::test]
async fn h2_client_crate_with_localhost_gets_serving() {
    let daemon = TestDaemon::start();
    let io = tokio::net::UnixStream::connect(&daemon.socket)
        .await
        .expect("connect");
    let (client, connection) = h2::client::handshake(io).await.expect("http/2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("client ready");
    for _ in 0..2 {
        let request = http::Request::builder()
            .method("POST")
            .uri("http://localhost/grpc.health.v1.Health/Check")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
        let (response, mut send) = client.send_request(request, false).expect("send headers");
        send.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
            .expect("send the empty HealthCheckRequest");
        let response = response.await.expect("response headers");
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut data = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("data");
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = body
            .trailers()
            .await
            .expect("trailers")
            .expect("grpc trailers");
        assert_eq!(
            trailers.get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"0"[..])
        );
        assert_eq!(raw_h2::health_status(&data), Ok(1));
        client = client.ready().await.expect("client ready again");
    }
}

/// RFC 3986 percent-encoding of everything but unreserved characters, as
/// grpc-core writes a socket path into `:authority`.
fn percent_encode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

/// A minimal HTTP/2 client written frame by frame, so it can send any
/// `:authority` (no client library lets one send an invalid one on
/// purpose). HPACK both ways through `loona-hpack`, its dynamic table on.
mod raw_h2 {
    use prost::Message;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::path::Path;
    use std::time::Duration;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const DATA: u8 = 0x0;
    const HEADERS: u8 = 0x1;
    const RST_STREAM: u8 = 0x3;
    const SETTINGS: u8 = 0x4;
    const PING: u8 = 0x6;
    const GOAWAY: u8 = 0x7;
    const CONTINUATION: u8 = 0x9;
    const END_STREAM: u8 = 0x1;
    const ACK: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;
    const PADDED: u8 = 0x8;
    const PRIORITY: u8 = 0x20;
    const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;

    fn frame(frame_type: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).expect("a small frame");
        let mut out = len.to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[frame_type, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// The HealthCheckResponse status in a gRPC length-prefixed message.
    pub fn health_status(data: &[u8]) -> Result<i32, String> {
        if data.len() < 5 || data[0] != 0 {
            return Err(format!("not one uncompressed grpc message: {data:?}"));
        }
        tonic_health::pb::HealthCheckResponse::decode(&data[5..])
            .map(|r| r.status)
            .map_err(|e| format!("bad HealthCheckResponse: {e}"))
    }

    /// Sends `count` health checks (service "") on one connection, one
    /// after the other, and returns each reply's status.
    pub fn health_checks(
        socket: &Path,
        authority: Option<&[u8]>,
        count: u32,
    ) -> Result<Vec<i32>, String> {
        let mut conn = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let io = |e: std::io::Error| format!("socket: {e}");
        conn.write_all(PREFACE).map_err(io)?;
        conn.write_all(&frame(SETTINGS, 0, 0, &[])).map_err(io)?;
        let mut encoder = loona_hpack::Encoder::new();
        let mut decoder = loona_hpack::Decoder::new();
        let mut statuses = Vec::new();
        for i in 0..count {
            let stream = 1 + 2 * i;
            let mut fields: Vec<(&[u8], &[u8])> = vec![
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", b"/grpc.health.v1.Health/Check"),
            ];
            if let Some(authority) = authority {
                fields.push((b":authority", authority));
            }
            fields.push((b"content-type", b"application/grpc"));
            fields.push((b"te", b"trailers"));
            let block = encoder.encode(fields);
            conn.write_all(&frame(HEADERS, END_HEADERS, stream, &block))
                .map_err(io)?;
            conn.write_all(&frame(DATA, END_STREAM, stream, &[0, 0, 0, 0, 0]))
                .map_err(io)?;
            statuses.push(read_reply(&mut conn, &mut decoder, stream)?);
        }
        Ok(statuses)
    }

    fn read_reply(
        conn: &mut UnixStream,
        decoder: &mut loona_hpack::Decoder,
        stream: u32,
    ) -> Result<i32, String> {
        let io = |e: std::io::Error| format!("socket: {e}");
        let mut data = Vec::new();
        let mut fields = Vec::new();
        let mut block: Option<(u32, u8, Vec<u8>)> = None;
        loop {
            let mut header = [0u8; 9];
            conn.read_exact(&mut header)
                .map_err(|e| format!("connection closed: {e}"))?;
            let len =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            let (frame_type, flags) = (header[3], header[4]);
            let id = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
            let mut payload = vec![0; len];
            conn.read_exact(&mut payload).map_err(io)?;
            match frame_type {
                SETTINGS if flags & ACK == 0 => {
                    // The rewrite tracks the client's HPACK table up to the
                    // 4096 bytes h2 advertises by default (uds_authority's
                    // SERVER_HEADER_TABLE_SIZE): pin that nobody changed it.
                    for entry in payload.chunks_exact(6) {
                        let id = u16::from_be_bytes([entry[0], entry[1]]);
                        let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
                        if id == SETTINGS_HEADER_TABLE_SIZE && value != 4096 {
                            return Err(format!(
                                "the daemon advertises SETTINGS_HEADER_TABLE_SIZE {value}: \
                                 uds_authority::SERVER_HEADER_TABLE_SIZE must follow"
                            ));
                        }
                    }
                    conn.write_all(&frame(SETTINGS, ACK, 0, &[])).map_err(io)?
                }
                PING if flags & ACK == 0 => {
                    conn.write_all(&frame(PING, ACK, 0, &payload)).map_err(io)?
                }
                GOAWAY => {
                    return Err(format!(
                        "GOAWAY: {:?}",
                        String::from_utf8_lossy(&payload[8.min(len)..])
                    ))
                }
                RST_STREAM if id == stream => {
                    let code = u32::from_be_bytes(
                        payload[..4].try_into().map_err(|_| "short RST_STREAM")?,
                    );
                    return Err(format!("RST_STREAM with error code {code}"));
                }
                DATA if id == stream => {
                    let body = unpad(flags, &payload)?;
                    data.extend_from_slice(body);
                    if flags & END_STREAM != 0 {
                        return Err("stream ended without trailers".into());
                    }
                }
                HEADERS | CONTINUATION => {
                    let fragment = if frame_type == HEADERS {
                        let mut body = unpad(flags, &payload)?;
                        if flags & PRIORITY != 0 {
                            body = body.get(5..).ok_or("short priority")?;
                        }
                        block = Some((id, flags, Vec::new()));
                        body.to_vec()
                    } else {
                        payload
                    };
                    let (block_stream, first_flags, bytes) =
                        block.as_mut().ok_or("stray CONTINUATION")?;
                    bytes.extend_from_slice(&fragment);
                    if flags & END_HEADERS != 0 {
                        let decoded = decoder.decode(bytes).map_err(|e| format!("hpack: {e}"))?;
                        let (block_stream, end_stream) =
                            (*block_stream, *first_flags & END_STREAM != 0);
                        block = None;
                        if block_stream != stream {
                            continue;
                        }
                        fields.extend(decoded);
                        if end_stream {
                            break;
                        }
                    }
                }
                _ => {}
            }
        }
        let field = |name: &[u8]| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        if field(b":status").as_deref() != Some("200")
            || field(b"grpc-status").as_deref() != Some("0")
        {
            return Err(format!(
                ":status {:?}, grpc-status {:?}, grpc-message {:?}",
                field(b":status"),
                field(b"grpc-status"),
                field(b"grpc-message")
            ));
        }
        health_status(&data)
    }

    fn unpad(flags: u8, payload: &[u8]) -> Result<&[u8], String> {
        if flags & PADDED == 0 {
            return Ok(payload);
        }
        let (&pad, rest) = payload.split_first().ok_or("empty padded frame")?;
        rest.len()
            .checked_sub(usize::from(pad))
            .map(|end| &rest[..end])
            .ok_or_else(|| "padding longer than the frame".into())
    }
}
