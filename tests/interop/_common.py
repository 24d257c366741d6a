"""Shared by the interop scripts: a clear failure when a package is missing."""

import sys

HINT = "pip install -r tests/interop/requirements.txt"


def missing(exc: ImportError) -> None:
    print(f"missing python package ({exc.name}): {HINT}", file=sys.stderr)
    sys.exit(3)
