# Helpers the example policies share: pass it as a second --policy.
package attest.lib

slsa_v1 := "https://slsa.dev/provenance/v1"

slsa_v02 := "https://slsa.dev/provenance/v0.2"

# Every SLSA provenance (v1 or v0.2) that verified for the artifacts.
provenance := [att |
	some att in input.attestations
	att.predicateType in {slsa_v1, slsa_v02}
]

# The builder id, wherever the predicate version keeps it; "" when absent
# (so a rule comparing it refuses instead of going undefined).
builder_id(att) := id if {
	att.predicateType == slsa_v1
	id := object.get(att.statement.predicate, ["runDetails", "builder", "id"], "")
} else := id if {
	att.predicateType == slsa_v02
	id := object.get(att.statement.predicate, ["builder", "id"], "")
}
