//! The default-deny seccomp filter still lets real builds run: a step runs
//! a representative set of build tools inside a real sandbox, cold and
//! through a warm helper (compile and link C with `cc -O2`, `make`, `sh` and
//! `bash`, Python with threads, a thread pool, fork and a subprocess, `tar` through a pipe,
//! `gzip`, `sha256sum`, `sort`, `find`, `git`), and a call no build needs
//! answers ENOSYS while a refusal keeps its chosen EPERM. Needs root (CI runs
//! it as root); without root every test prints "skipped: needs root".

mod common;

use attest_sandbox::Outcome;
use common::{run, warm_from_env};

/// The one skip of the workspace: counted, and a failure under
/// `ATTEST_REQUIRE_ROOT=1` (as CI runs).
macro_rules! needs_root {
    () => {
        attest_testkit::needs_root!("the sandbox's namespaces, cgroups and mounts");
    };
}

const HELLO_C: &str = r#"#include <pthread.h>
#include <stdio.h>
static void *work(void *p) { *(int *)p *= 2; return NULL; }
int main(void) {
    int v = 21; pthread_t t;
    if (pthread_create(&t, NULL, work, &v) || pthread_join(t, NULL)) return 1;
    printf("hello %d\n", v);
    return 0;
}
"#;

const MAKEFILE: &str = "all: out.txt\nout.txt: hello\n\t./hello > out.txt\n";

const PY: &str = r#"
import threading, concurrent.futures, subprocess, hashlib, tempfile, os
out = []
ts = [threading.Thread(target=out.append, args=(i,)) for i in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
with concurrent.futures.ThreadPoolExecutor(2) as ex:
    squares = list(ex.map(pow, range(4), [2] * 4))
pid = os.fork()
if pid == 0:
    os._exit(7)
assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7
with tempfile.TemporaryDirectory() as d:
    open(os.path.join(d, "f"), "w").write("x")
echo = subprocess.run(["echo", "sub"], capture_output=True, text=True).stdout.strip()
print("ok-python", sorted(out) == list(range(8)), squares, echo, hashlib.sha256(b"").hexdigest()[:8])
"#;

/// `syscall(NR, 0...)` from Python: its result and errno.
fn py_syscall(nr: i64) -> String {
    format!(
        "import ctypes; c = ctypes.CDLL(None, use_errno=True); r = c.syscall({nr}, 0, 0, 0, 0, 0, 0); print(r, ctypes.get_errno())"
    )
}

fn build_script() -> String {
    format!(
        r#"set -eu
cc -O2 -pthread -o hello hello.c
./hello | grep -q 'hello 42' && echo ok-cc
make -s && grep -q 'hello 42' out.txt && echo ok-make
python3 - <<'PYEOF'
{PY}
PYEOF
mkdir -p t/a/b && echo data > t/a/b/f && ln -s b t/a/l
tar cf - t | (mkdir u && cd u && tar xf -)
cmp t/a/b/f u/t/a/b/f && [ "$(readlink u/t/a/l)" = b ] && echo ok-tar
gzip -c hello.c | gzip -dc | cmp - hello.c && echo ok-gzip
sha256sum hello.c | grep -q ' hello.c$' && echo ok-sha256sum
[ "$(printf 'b\na\nc\n' | sort | tr -d '\n')" = abc ] && echo ok-sort
[ "$(find t -type f | sort)" = t/a/b/f ] && echo ok-find
bash -c 'a=(1 2 3); [ ${{#a[@]}} = 3 ]' && echo ok-bash
git init -q repo && cd repo && echo x > x && git add x
git -c user.name=b -c user.email=b@example.invalid commit -qm one
[ "$(git rev-list --count HEAD)" = 1 ] && echo ok-git
cd ..
echo "unlisted $(python3 -c '{unlisted}')"
echo "refused $(python3 -c '{refused}')"
"#,
        unlisted = py_syscall(libc::SYS_move_pages),
        refused = py_syscall(libc::SYS_mount),
    )
}

fn representative_build_tools_run_under_the_filter(warm: bool) {
    let ran = run(&["/bin/sh", "build.sh"], "", warm, |d| {
        std::fs::write(d.join("build.sh"), build_script()).unwrap();
        std::fs::write(d.join("hello.c"), HELLO_C).unwrap();
        std::fs::write(d.join("Makefile"), MAKEFILE).unwrap();
    });
    assert_eq!(
        ran.report.outcome,
        Outcome::Exited { code: 0 },
        "stdout:\n{}\nstderr:\n{}",
        ran.stdout,
        ran.stderr
    );
    for tool in [
        "ok-cc",
        "ok-make",
        "ok-tar",
        "ok-gzip",
        "ok-sha256sum",
        "ok-sort",
        "ok-find",
        "ok-bash",
        "ok-git",
    ] {
        assert!(
            ran.stdout.lines().any(|l| l == tool),
            "{tool} missing:\n{}\n{}",
            ran.stdout,
            ran.stderr
        );
    }
    assert!(
        ran.stdout
            .lines()
            .any(|l| l.starts_with("ok-python True [0, 1, 4, 9] sub e3b0c442")),
        "{}\n{}",
        ran.stdout,
        ran.stderr
    );
    // move_pages (of the step's own pid, no page): allowed by the old
    // deny-list, not on the allowlist: ENOSYS as a kernel without it.
    let enosys = format!("unlisted -1 {}", libc::ENOSYS);
    assert!(ran.stdout.lines().any(|l| l == enosys), "{}", ran.stdout);
    // mount keeps the EPERM its refusal chose, over the allowlist's ENOSYS.
    let eperm = format!("refused -1 {}", libc::EPERM);
    assert!(ran.stdout.lines().any(|l| l == eperm), "{}", ran.stdout);
}

#[test]
fn representative_build_tools_run_under_the_filter_cold() {
    needs_root!();
    representative_build_tools_run_under_the_filter(warm_from_env());
}

#[test]
fn representative_build_tools_run_under_the_filter_warm() {
    needs_root!();
    representative_build_tools_run_under_the_filter(true);
}
