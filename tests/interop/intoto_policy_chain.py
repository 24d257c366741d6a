"""Make an in-toto supply chain with Python in-toto for `attest verify --layout`.

usage: intoto_policy_chain.py OUT_DIR OUR_PUBLIC.pem

In OUT_DIR/work, functionary "alice" runs two steps with in-toto's own
`in-toto-run` (its main(), from this interpreter): "checkout" creates
hello.c, "build" copies it to app. The third step, "package", belongs to
OUR_PUBLIC.pem (attest's key): the Rust test writes its link with attest's
link code. "mallory" (a key the layout does not know) also runs "build",
into OUT_DIR/mallory/. Layouts, signed by "owner" through securesystemslib's
CryptoSigner:

  good.layout          expires in a day; the chain above
  expired.layout       the same, expired
  broken-match.layout  package's materials MATCH app WITH PRODUCTS FROM
                       checkout (checkout never made app), then DISALLOW *

Links land in OUT_DIR/links. Prints JSON: the keyids, and the paths of the
owner's public key and of the files the Rust side needs.
"""

import datetime
import json
import os
import subprocess
import sys

from _common import missing

try:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from in_toto.models.layout import Layout, Step
    from in_toto.models.metadata import Metablock
    from securesystemslib.signer import CryptoSigner
except ImportError as e:
    missing(e)


def keypair(out, name):
    private = ed25519.Ed25519PrivateKey.generate()
    priv_path = os.path.join(out, f"{name}.key.pem")
    pub_path = os.path.join(out, f"{name}.pub.pem")
    with open(priv_path, "wb") as f:
        f.write(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(pub_path, "wb") as f:
        f.write(
            private.public_key().public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
        )
    return private, priv_path, pub_path


def in_toto_run(cwd, args):
    """in-toto's own command line, from this interpreter."""
    subprocess.run(
        [sys.executable, "-c", "from in_toto.in_toto_run import main; main()", *args],
        cwd=cwd,
        check=True,
    )


def layout(owner, alice_pub, ours_pub, expires, broken_match):
    lay = Layout()
    lay.expires = expires
    alice = lay.add_functionary_key_from_path(alice_pub)
    ours = lay.add_functionary_key_from_path(ours_pub)

    checkout = Step(name="checkout")
    checkout.pubkeys = [alice["keyid"]]
    checkout.add_material_rule_from_string("DISALLOW *")
    checkout.add_product_rule_from_string("CREATE hello.c")
    checkout.add_product_rule_from_string("DISALLOW *")

    build = Step(name="build")
    build.pubkeys = [alice["keyid"]]
    build.set_expected_command_from_string("cp hello.c app")
    build.add_material_rule_from_string("MATCH hello.c WITH PRODUCTS FROM checkout")
    build.add_material_rule_from_string("DISALLOW *")
    build.add_product_rule_from_string("CREATE app")
    build.add_product_rule_from_string("ALLOW hello.c")
    build.add_product_rule_from_string("DISALLOW *")

    package = Step(name="package")
    package.pubkeys = [ours["keyid"]]
    source = "checkout" if broken_match else "build"
    package.add_material_rule_from_string(f"MATCH app WITH PRODUCTS FROM {source}")
    package.add_material_rule_from_string("DISALLOW *")
    package.add_product_rule_from_string("CREATE app.tar")
    package.add_product_rule_from_string("DISALLOW *")

    lay.steps = [checkout, build, package]
    metablock = Metablock(signed=lay)
    metablock.create_signature(CryptoSigner(owner))
    return metablock, alice["keyid"], ours["keyid"]


def main() -> int:
    out, ours_pub = sys.argv[1:]
    for d in ("work", "links", "mallory", "mallory-work"):
        os.makedirs(os.path.join(out, d), exist_ok=True)
    owner, _, owner_pub = keypair(out, "owner")
    _, alice_key, alice_pub = keypair(out, "alice")
    _, mallory_key, _ = keypair(out, "mallory")

    work = os.path.join(out, "work")
    links = os.path.join(out, "links")
    in_toto_run(
        work,
        ["-n", "checkout", "--signing-key", alice_key, "-p", "hello.c", "-d", links,
         "--", "sh", "-c", "printf 'int main(void){return 0;}\\n' > hello.c"],
    )
    in_toto_run(
        work,
        ["-n", "build", "--signing-key", alice_key, "-m", "hello.c", "-p", "app", "hello.c",
         "-d", links, "--", "cp", "hello.c", "app"],
    )
    # mallory's build, of the same files, signed by a key the layout lacks.
    in_toto_run(
        work,
        ["-n", "build", "--signing-key", mallory_key, "-m", "hello.c", "-p", "app", "hello.c",
         "-d", os.path.join(out, "mallory"), "--", "true"],
    )

    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    in_a_day = (now + datetime.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    yesterday = (now - datetime.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    result = {"owner_pub": owner_pub, "work": work, "links": links,
              "mallory_links": os.path.join(out, "mallory")}
    for name, expires, broken in (
        ("good", in_a_day, False),
        ("expired", yesterday, False),
        ("broken-match", in_a_day, True),
    ):
        metablock, alice_id, ours_id = layout(owner, alice_pub, ours_pub, expires, broken)
        path = os.path.join(out, f"{name}.layout")
        metablock.dump(path)
        result[name] = path
        result["alice_keyid"] = alice_id
        result["ours_keyid"] = ours_id
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
