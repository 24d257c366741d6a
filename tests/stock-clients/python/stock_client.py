"""A stock grpcio client with a default channel and no options, against
attestd's Unix socket: health checks, server reflection (v1alpha, the
version grpcio-reflection speaks) and the Keys service through stubs
generated from proto/attest/v1/*.proto at run time by grpcio-tools.

Driven by tests/tests/stock_clients.rs, which checks what it prints:

    python3 stock_client.py SOCKET PROTO_DIR PUBKEY_OUT

Prints one JSON object: {"health": {service: status}, "services": [...],
"keys": [{"keyid", "algorithm"}]}, and writes the keys' PEM to PUBKEY_OUT.
"""

import json
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

sys.path.insert(
    0,
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "examples", "clients", "python"),
)
import attest_stubs  # noqa: E402  (the example's stub generator)


def main() -> int:
    socket, proto_dir, pubkey_out = sys.argv[1:4]
    stubs = attest_stubs.generate(proto_dir)
    # The default channel: no options, no authority override. grpc-core
    # sends the percent-encoded socket path as :authority.
    channel = grpc.insecure_channel(f"unix:{socket}")

    health = health_pb2_grpc.HealthStub(channel)
    statuses = {}
    for service in ["", "attest.v1.Build", "attest.v1.ContentStore", "attest.v1.Keys"]:
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
        statuses[service] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    services = sorted(ProtoReflectionDescriptorDatabase(channel).get_services())

    keys_stub = stubs.keys_grpc.KeysStub(channel)
    reply = keys_stub.GetPublicKeys(stubs.keys.GetPublicKeysRequest(), timeout=30)
    with open(pubkey_out, "w") as f:
        f.write("".join(k.pem for k in reply.keys))

    print(
        json.dumps(
            {
                "health": statuses,
                "services": services,
                "keys": [{"keyid": k.keyid, "algorithm": k.algorithm} for k in reply.keys],
            }
        )
    )
    channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
