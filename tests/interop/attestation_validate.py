"""Validate an in-toto Statement with a SLSA v1 predicate that attestd wrote,
with the in-toto-attestation package (the in-toto project's own bindings).

usage: attestation_validate.py STATEMENT.json

The Statement and the predicate are parsed into the project's protobuf
messages with unknown fields refused, so every field name we write must be
one the spec defines (or sit inside a free-form Struct); then the Statement
and every ResourceDescriptor go through the package's validate(), and the
predicate through the required-field checks of the Go validator (the Python
package has none for the predicate). Prints a JSON summary.
"""

import json
import sys

from _common import missing

try:
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
    from in_toto_attestation.v1.statement import Statement
except ImportError as e:
    missing(e)

SLSA_V1 = "https://slsa.dev/provenance/v1"


def main() -> int:
    with open(sys.argv[1], "rb") as f:
        doc = json.load(f)
    st_pb = json_format.ParseDict(doc, statement_pb2.Statement(), ignore_unknown_fields=False)
    Statement.copy_from_pb(st_pb).validate()
    if st_pb.predicate_type != SLSA_V1:
        raise ValueError(f"predicateType {st_pb.predicate_type!r}, expected {SLSA_V1!r}")

    prov = json_format.ParseDict(
        doc["predicate"], provenance_pb2.Provenance(), ignore_unknown_fields=False
    )
    bd, rd = prov.build_definition, prov.run_details
    if not bd.build_type:
        raise ValueError("buildDefinition.buildType required")
    if not bd.HasField("external_parameters"):
        raise ValueError("buildDefinition.externalParameters required")
    if not rd.builder.id:
        raise ValueError("runDetails.builder.id required")
    descriptors = list(bd.resolved_dependencies) + list(rd.byproducts)
    descriptors += list(rd.builder.builder_dependencies)
    for d in descriptors:
        ResourceDescriptor.copy_from_pb(d).validate()

    print(
        json.dumps(
            {
                "subjects": [s.name for s in st_pb.subject],
                "builderId": rd.builder.id,
                "buildType": bd.build_type,
                "descriptors": len(descriptors),
                "startedOn": rd.metadata.started_on.ToJsonString()
                if rd.metadata.HasField("started_on")
                else None,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
