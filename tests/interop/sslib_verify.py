"""Verify a DSSE envelope that attestd wrote, with securesystemslib.

usage: sslib_verify.py ENVELOPE.json THRESHOLD PUBLIC.pem [PUBLIC.pem ...]

Prints JSON: {"keyids": [securesystemslib keyid of each PEM, in order],
"verified": [keyids whose signatures verified]}. Exits non-zero if fewer than
THRESHOLD keys verified. securesystemslib only tries a key on a signature
whose keyid equals the key's keyid, so passing also proves our keyids equal
theirs.
"""

import json
import sys

from _common import missing

try:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey
except ImportError as e:
    missing(e)


def main() -> int:
    envelope_path, threshold, *pems = sys.argv[1:]
    keys = []
    for pem in pems:
        with open(pem, "rb") as f:
            keys.append(SSlibKey.from_crypto(load_pem_public_key(f.read())))
    with open(envelope_path, "rb") as f:
        envelope = Envelope.from_dict(json.load(f))
    verified = envelope.verify(keys, int(threshold))
    print(json.dumps({"keyids": [k.keyid for k in keys], "verified": sorted(verified)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
