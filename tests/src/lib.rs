//! Shared harness of the end-to-end tests: a real `attestd` process on a
//! temporary socket and state dir, driven by the real `attest` binary and
//! library. The binaries are the ones `cargo test --workspace` builds
//! (every binary package has an integration test, which makes cargo build
//! its binaries before any test runs).
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The directory holding this build's binaries (target/debug).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/e2e-HASH -> target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// Path of one of the workspace's binaries, failing with a clear message
/// if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` so every binary is built",
        path.display()
    );
    path
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A running daemon, stopped and cleaned up on drop.
pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    child: Child,
}

impl TestDaemon {
    /// Starts `attestd` with a fresh state dir and socket and waits until
    /// it accepts connections.
    pub fn start() -> TestDaemon {
        Self::start_with(&[])
    }

    /// Same, with extra flags.
    pub fn start_with(extra: &[&str]) -> TestDaemon {
        Self::start_with_env(extra, &[])
    }

    /// Same, with extra flags and environment variables.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> TestDaemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("attestd.sock");
        let state_dir = dir.path().join("state");
        let child = spawn_daemon(dir.path(), &socket, &state_dir, extra, env, &[]);
        let mut daemon = TestDaemon {
            dir,
            socket,
            state_dir,
            child,
        };
        daemon.wait_listening();
        daemon
    }

    /// Starts `attestd` as `WRAPPER... attestd ARGS`, the way a service
    /// manager that prepares its environment (mounts, namespaces) would;
    /// `wrapper` gets `{state}` replaced by the state dir.
    pub fn start_under(wrapper: &[&str], extra: &[&str]) -> TestDaemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("attestd.sock");
        let state_dir = dir.path().join("state");
        std::fs::create_dir_all(&state_dir).expect("create state dir");
        let state = state_dir.to_str().expect("a UTF-8 temp dir");
        let wrapper: Vec<String> = wrapper
            .iter()
            .map(|w| w.replace("{state}", state))
            .collect();
        let child = spawn_daemon(dir.path(), &socket, &state_dir, extra, &[], &wrapper);
        let mut daemon = TestDaemon {
            dir,
            socket,
            state_dir,
            child,
        };
        daemon.wait_listening();
        daemon
    }

    /// Kills the daemon with SIGKILL: a crash, no clean-up of its own.
    pub fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a new daemon on the same state dir and socket.
    pub fn restart(&mut self) {
        self.child = spawn_daemon(
            self.dir.path(),
            &self.socket,
            &self.state_dir,
            &[],
            &[],
            &[],
        );
        self.wait_listening();
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "attestd exited with {status} during start-up:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "attestd did not listen within 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("attestd.log")).unwrap_or_default()
    }

    /// An `attest` command pointed at this daemon (through ATTEST_SOCKET,
    /// as a CI runner would be), with its digest cache inside the test dir.
    pub fn attest(&self) -> Command {
        let mut command = Command::new(bin("attest"));
        command
            .env("ATTEST_SOCKET", &self.socket)
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .stdin(Stdio::null());
        command
    }

    /// A fresh directory inside the test dir (the `attest` commands' cwd).
    pub fn work_dir(&self, name: &str) -> PathBuf {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).expect("create work dir");
        dir
    }

    /// `attest run --quiet --src SRC ARGS...` from `work`, output printed.
    pub fn attest_run(&self, work: &Path, src: &Path, args: &[&str]) -> Output {
        run(self
            .attest()
            .current_dir(work)
            .args(["run", "--quiet", "--src"])
            .arg(src)
            .args(args))
    }

    /// `path` as the daemon sees it: through `/proc/PID/root`, which opens
    /// onto the daemon's mount namespace, where its memory tmpfs
    /// (`STATE/inputs-mem`) is mounted; from this process's namespace that
    /// directory is empty.
    pub fn daemon_view(&self, path: &Path) -> PathBuf {
        Path::new(&format!("/proc/{}/root", self.pid()))
            .join(path.strip_prefix("/").expect("an absolute path"))
    }

    /// The directories that hold materialized input trees, as the daemon
    /// sees them: the memory tmpfs, then the disk.
    pub fn input_tree_dirs(&self) -> [PathBuf; 2] {
        [
            self.daemon_view(&self.state_dir.join("inputs-mem")),
            self.state_dir.join("inputs"),
        ]
    }

    /// The materialized input trees (not their lists or temporary names),
    /// in memory and on disk, as the daemon sees them.
    pub fn input_trees(&self) -> Vec<PathBuf> {
        self.input_tree_dirs()
            .iter()
            .filter_map(|dir| std::fs::read_dir(dir).ok())
            .flat_map(|entries| entries.flatten())
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .collect()
    }

    /// Whether the daemon process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_daemon(
    dir: &Path,
    socket: &Path,
    state_dir: &Path,
    extra: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
    wrapper: &[String],
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("attestd.log"))
        .expect("log file");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(bin("attestd"));
            command
        }
        None => Command::new(bin("attestd")),
    };
    command
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--socket")
        .arg(socket)
        .arg("--sandbox-helper")
        .arg(bin("attestd-sandbox"))
        .arg("--config")
        .arg("/dev/null")
        // Every daemon would otherwise read the host's whole /usr into its
        // fresh state dir; tests of rootfs hashing pass `--rootfs-hashing on`.
        .env("ATTESTD_ROOTFS_HASHING", "off")
        .envs(env.iter().copied())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start attestd")
}

/// Processes whose command line contains `marker` (scanning /proc, so
/// tests need no extra tools).
pub fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(marker) {
                found.push(format!(
                    "{}: {cmdline}",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
    }
    found
}

/// Copies a directory tree (regular files and directories).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// Runs a command and returns its output, printing it for test logs.
pub fn run(command: &mut Command) -> Output {
    let output = command.output().expect("run command");
    eprintln!(
        "$ {:?}\nstatus: {}\nstdout: {}\nstderr: {}",
        command,
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Hashes `src` and uploads all of it (directories and files) through the
/// library, returning the tree: for tests that then send raw requests.
pub async fn upload_tree(client: &attest::Client, src: &Path) -> attest_tree::Tree {
    let tree = attest_tree::build_tree(src, None, &|_| {}).expect("hash source tree");
    let mut blobs: Vec<_> = tree
        .directories
        .iter()
        .map(|(d, b)| (*d, attest::client::BlobSource::Bytes(b.clone())))
        .collect();
    blobs.extend(
        tree.files
            .iter()
            .map(|f| (f.digest, attest::client::BlobSource::File(f.path.clone()))),
    );
    client
        .upload(blobs, |_| {})
        .await
        .expect("upload source tree");
    tree
}
