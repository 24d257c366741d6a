#!/usr/bin/env bash
# Makes the Python environment the interop tests need and prints its
# interpreter's path (everything else goes to stderr):
#
#   export ATTEST_PYTHON="$(bash scripts/interop-venv.sh)"
#
# The pinned packages of tests/interop/requirements.txt go into a virtual
# environment under target/, never into the system interpreter: Debian 12
# and Ubuntu 23.04+ refuse `pip install` there (PEP 668). The environment is
# reused while the requirements and the interpreter are unchanged (a stamp
# holds their hash). Uses `python3` from PATH, or $PYTHON3 when set.
#
# When `python3 -m venv` cannot make an environment with pip (Debian and
# Ubuntu ship that part as python3-venv), it falls back, saying so, to:
#   1. as root with ATTEST_CI=1 (set by .ci/run), apt-get install python3-venv;
#   2. an environment without pip, filled by the interpreter's own pip
#      (`pip --python`, pip 22.3 or later);
#   3. `virtualenv`, if installed;
# and otherwise stops with what to install.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON3:-python3}
requirements=tests/interop/requirements.txt
target=${CARGO_TARGET_DIR:-target}
mkdir -p "$target"
venv="$(cd "$target" && pwd)/interop-venv"
stamp="$venv/.requirements-stamp"

say() { echo "interop-venv: $*" >&2; }

if ! command -v "$python" >/dev/null; then
    say "no $python on PATH: install Python 3 (Debian/Ubuntu: apt-get install python3 python3-venv)"
    exit 1
fi
want="$( { sha256sum "$requirements"; "$python" -c 'import sys; print(sys.version, sys.executable)'; } | sha256sum | cut -d' ' -f1)"

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "$venv/bin/python"
    exit 0
fi

# A venv with pip, made by the interpreter's own venv module.
full_venv() { rm -rf "$venv" && "$python" -m venv "$venv" >&2 && "$venv/bin/python" -m pip --version >/dev/null 2>&1; }

rm -rf "$venv"
how=""
if full_venv; then
    how="venv"
elif [[ "$(id -u)" == 0 && "${ATTEST_CI:-}" == 1 ]] && command -v apt-get >/dev/null; then
    say "$python -m venv cannot make an environment with pip; CI as root: installing python3-venv"
    apt-get update -qq >&2 && apt-get install -y -qq python3-venv >&2
    full_venv && how="venv (after apt-get install python3-venv)"
fi
if [[ -z "$how" ]] && "$python" -m pip --version >/dev/null 2>&1 \
    && rm -rf "$venv" && "$python" -m venv --without-pip "$venv" >&2; then
    say "$python -m venv has no pip here (Debian/Ubuntu: python3-venv); filling a pip-less environment with $python's own pip"
    how="pip --python"
fi
if [[ -z "$how" ]] && command -v virtualenv >/dev/null; then
    say "$python -m venv is unavailable (Debian/Ubuntu: python3-venv); using virtualenv"
    rm -rf "$venv" && virtualenv -q -p "$python" "$venv" >&2 && how="virtualenv"
fi
if [[ -z "$how" ]]; then
    rm -rf "$venv"
    say "cannot make a virtual environment with $python: install its venv module"
    say "(Debian/Ubuntu: apt-get install python3-venv; Fedora and Arch ship it with python3)"
    exit 1
fi

pip_install=("$venv/bin/python" -m pip)
if [[ "$how" == "pip --python" ]]; then
    pip_install=("$python" -m pip --python "$venv/bin/python")
fi
"${pip_install[@]}" install --quiet --disable-pip-version-check -r "$requirements" >&2
echo "$want" >"$stamp"
say "installed $requirements into $venv ($how)"
echo "$venv/bin/python"
