"""Write and sign an in-toto layout for a two-step chain built by attestd.

usage: intoto_layout.py OUT.layout LAYOUT_PRIVATE.pem FUNCTIONARY.pem

Step "compile" turns hello.c into hello; step "package" packs exactly the
hello that compile produced into hello.tar (MATCH ... WITH PRODUCTS FROM
compile). The functionary of both steps is the PEM public key (attestd's
key, from `attest pubkey`); the layout is signed with the PKCS#8 private
key (one `attest keygen` wrote) through securesystemslib's CryptoSigner.
Verification is then in-toto's own CLI, `in-toto-verify`, run by the test.
"""

import sys

from _common import missing

try:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from in_toto.models.layout import Layout, Step
    from in_toto.models.metadata import Metablock
    from securesystemslib.signer import CryptoSigner
except ImportError as e:
    missing(e)


def main() -> int:
    out, layout_key, functionary = sys.argv[1:]
    layout = Layout()
    layout.set_relative_expiration(days=1)
    key = layout.add_functionary_key_from_path(functionary)

    compile_step = Step(name="compile")
    compile_step.pubkeys = [key["keyid"]]
    compile_step.set_expected_command_from_string("cc -O2 -o hello hello.c")
    compile_step.add_material_rule_from_string("ALLOW hello.c")
    compile_step.add_material_rule_from_string("DISALLOW *")
    compile_step.add_product_rule_from_string("CREATE hello")
    compile_step.add_product_rule_from_string("DISALLOW *")

    package_step = Step(name="package")
    package_step.pubkeys = [key["keyid"]]
    package_step.add_material_rule_from_string("MATCH hello WITH PRODUCTS FROM compile")
    package_step.add_material_rule_from_string("DISALLOW *")
    package_step.add_product_rule_from_string("CREATE hello.tar")
    package_step.add_product_rule_from_string("DISALLOW *")

    layout.steps = [compile_step, package_step]
    metablock = Metablock(signed=layout)
    with open(layout_key, "rb") as f:
        signer = CryptoSigner(load_pem_private_key(f.read(), None))
    metablock.create_signature(signer)
    metablock.dump(out)
    print(key["keyid"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
