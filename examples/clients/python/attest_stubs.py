"""Python stubs for attestd's published contract, generated at run time
from proto/attest/v1/*.proto by grpcio-tools (no generated code is kept
in the repository, so the stubs always match the .proto files)."""

import atexit
import glob
import importlib
import os
import shutil
import sys
import tempfile
import types

from grpc_tools import protoc


def default_proto_dir() -> str:
    """proto/ of the repository this file is in."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.normpath(os.path.join(here, "..", "..", "..", "proto"))


def generate(proto_dir: str) -> types.SimpleNamespace:
    """Compiles attest/v1/*.proto under `proto_dir` and imports the result.

    Returns a namespace with the message modules (common, cas, build,
    keys, attestations) and the service modules (cas_grpc, build_grpc,
    keys_grpc, attestations_grpc)."""
    out = tempfile.mkdtemp(prefix="attest-stubs-")
    # Imported modules stay loaded; the files are not needed after exit.
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    protos = sorted(glob.glob(os.path.join(proto_dir, "attest", "v1", "*.proto")))
    if not protos:
        raise SystemExit(f"no attest/v1/*.proto under {proto_dir}")
    status = protoc.main(
        ["grpc_tools.protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}", *protos]
    )
    if status != 0:
        raise SystemExit(f"protoc failed on {proto_dir} with status {status}")
    sys.path.insert(0, out)
    stubs = types.SimpleNamespace()
    for name in ["common", "cas", "build", "keys", "attestations"]:
        setattr(stubs, name, importlib.import_module(f"attest.v1.{name}_pb2"))
        if name != "common":
            setattr(stubs, f"{name}_grpc", importlib.import_module(f"attest.v1.{name}_pb2_grpc"))
    return stubs
