"""Sign a payload as a foreign producer would: securesystemslib's CryptoSigner
with a fresh pyca/cryptography key.

usage: sslib_sign.py ed25519|ecdsa PAYLOAD_FILE OUT_DIR

Writes OUT_DIR/envelope.json (payloadType application/vnd.in-toto+json) and
OUT_DIR/public.pem (SubjectPublicKeyInfo, as pyca/cryptography writes it),
and prints JSON {"keyid": securesystemslib's keyid of the key}.
"""

import json
import os
import sys

from _common import missing

try:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import CryptoSigner
except ImportError as e:
    missing(e)


def main() -> int:
    alg, payload_path, out = sys.argv[1:]
    if alg == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        private = ec.generate_private_key(ec.SECP256R1())
    signer = CryptoSigner(private)
    with open(payload_path, "rb") as f:
        envelope = Envelope(f.read(), "application/vnd.in-toto+json", {})
    envelope.sign(signer)
    with open(os.path.join(out, "envelope.json"), "w") as f:
        json.dump(envelope.to_dict(), f)
    pem = private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    with open(os.path.join(out, "public.pem"), "wb") as f:
        f.write(pem)
    print(json.dumps({"keyid": signer.public_key.keyid}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
