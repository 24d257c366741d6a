"""securesystemslib's verification rate for the envelopes verify_bench wrote.

usage: verify_sslib.py DIR [SECONDS]

For each of ed25519 / ecdsa: load DIR/<alg>.intoto.jsonl and DIR/<alg>.pub.pem
once, then loop Envelope.verify([key], 1) (PAE + signature only; it does not
parse the statement or match subjects, which `attest verify` also does) and
print `ALG verifications/s N`.
"""

import json
import sys
import time

from cryptography.hazmat.primitives.serialization import load_pem_public_key
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey


def main() -> int:
    directory = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    for alg in ("ed25519", "ecdsa"):
        with open(f"{directory}/{alg}.pub.pem", "rb") as f:
            key = SSlibKey.from_crypto(load_pem_public_key(f.read()))
        with open(f"{directory}/{alg}.intoto.jsonl", "rb") as f:
            envelope = Envelope.from_dict(json.loads(f.readline()))
        envelope.verify([key], 1)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(100):
                envelope.verify([key], 1)
            count += 100
        print(f"{alg} verifications/s {count / (time.perf_counter() - start):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
