"""Parse a Sigstore bundle that attest wrote with the Sigstore project's own
protobuf bindings, and verify its DSSE envelope with securesystemslib.

usage: sigstore_bundle_verify.py BUNDLE.sigstore.json PUBLIC.pem

sigstore-protobuf-specs parses the bundle (its media type, the public-key
hint, the envelope); the envelope's fields as that parser decoded them are
handed to securesystemslib, which verifies the signature with the PEM key
(trying it only on a signature whose keyid equals the key's). Prints JSON:
{"mediaType", "hint", "payloadType", "keyid", "verified": [keyids]}; exits
non-zero when the bundle does not parse or no signature verifies.
"""

import json
import sys

from _common import missing

try:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import Signature, SSlibKey
    from sigstore_protobuf_specs.dev.sigstore.bundle.v1 import Bundle
except ImportError as e:
    missing(e)


def main() -> int:
    bundle_path, pem_path = sys.argv[1:]
    with open(bundle_path, encoding="utf-8") as f:
        # The classmethod form: these bindings are pydantic dataclasses and
        # an empty Bundle() (its oneof unset) does not validate.
        bundle = Bundle.from_dict(json.load(f))
    if bundle.media_type != "application/vnd.dev.sigstore.bundle.v0.3+json":
        print(f"unexpected media type {bundle.media_type!r}", file=sys.stderr)
        return 1
    dsse = bundle.dsse_envelope
    if not dsse.signatures:
        print("the bundle's envelope has no signature", file=sys.stderr)
        return 1
    envelope = Envelope(
        payload=dsse.payload,
        payload_type=dsse.payload_type,
        signatures={
            s.keyid: Signature(keyid=s.keyid, sig=s.sig.hex()) for s in dsse.signatures
        },
    )
    with open(pem_path, "rb") as f:
        key = SSlibKey.from_crypto(load_pem_public_key(f.read()))
    verified = envelope.verify([key], 1)
    print(
        json.dumps(
            {
                "mediaType": bundle.media_type,
                "hint": bundle.verification_material.public_key.hint,
                "payloadType": dsse.payload_type,
                "keyid": key.keyid,
                "verified": sorted(verified),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
