"""Validate a SLSA VSA that `attest verify --emit-vsa` wrote, with the
in-toto-attestation package (the in-toto project's own bindings).

usage: vsa_validate.py ENVELOPE.intoto.jsonl PUBLIC.pem

The DSSE signature is checked with securesystemslib against the PEM key;
the Statement is parsed into the project's protobuf message with unknown
fields refused and validated; the predicate is parsed into
in_toto_attestation.predicates.vsa.v1's VerificationSummary with unknown
fields refused, and the fields the VSA spec requires are checked. Prints a
JSON summary.

verifiedLevels: the SLSA VSA v1 spec makes it an array of strings, and so
does attest; the vsa/v1 proto of in-toto-attestation 0.9.3 (pinned)
declares `verified_levels` a single string. When the installed proto says
so, the field is checked here by the spec (a list of strings) and left out
of the protobuf parse; every other field still goes through the proto with
unknown fields refused.
"""

import base64
import json
import sys

from _common import missing

try:
    from google.protobuf import json_format
    from in_toto_attestation.predicates.vsa.v1 import vsa_pb2
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
except ImportError as e:
    missing(e)

VSA_V1 = "https://slsa.dev/verification_summary/v1"


def main() -> int:
    env_path, pem_path = sys.argv[1:]
    with open(env_path, "rb") as f:
        envelope = Envelope.from_dict(json.loads(f.readline()))
    with open(pem_path, "rb") as f:
        key = SSlibKey.from_crypto(load_pem_public_key(f.read()))
    envelope.verify([key], 1)
    doc = json.loads(envelope.payload)

    st_pb = json_format.ParseDict(doc, statement_pb2.Statement(), ignore_unknown_fields=False)
    Statement.copy_from_pb(st_pb).validate()
    if st_pb.predicate_type != VSA_V1:
        raise ValueError(f"predicateType {st_pb.predicate_type!r}, expected {VSA_V1!r}")
    predicate = dict(doc["predicate"])
    levels = predicate.get("verifiedLevels", [])
    field = vsa_pb2.VerificationSummary.DESCRIPTOR.fields_by_name["verified_levels"]
    if not field.is_repeated:
        if not isinstance(levels, list) or not all(isinstance(x, str) for x in levels):
            raise ValueError(f"verifiedLevels must be a list of strings, found {levels!r}")
        predicate.pop("verifiedLevels", None)
    vsa = json_format.ParseDict(
        predicate, vsa_pb2.VerificationSummary(), ignore_unknown_fields=False
    )
    for field in ("verifier", "time_verified", "policy"):
        if not vsa.HasField(field):
            raise ValueError(f"{field} required")
    if not vsa.verifier.id:
        raise ValueError("verifier.id required")
    if not vsa.resource_uri:
        raise ValueError("resourceUri required")
    if vsa.verification_result not in ("PASSED", "FAILED"):
        raise ValueError(f"verificationResult {vsa.verification_result!r}")
    print(
        json.dumps(
            {
                "verifier": vsa.verifier.id,
                "result": vsa.verification_result,
                "policyDigest": dict(vsa.policy.digest),
                "inputs": [dict(i.digest) for i in vsa.input_attestations],
                "levels": levels,
                "subjects": [s.name for s in st_pb.subject],
                "timeVerified": json_format.MessageToJson(vsa.time_verified).strip('"'),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
