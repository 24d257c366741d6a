# Only requesters in data.allowed_requesters may have asked for the build.
# Written against buildDefinition.internalParameters.requester ({"kind":
# "unix" | "mtls", "id": ...}), the field attestd is to record requesters
# in (not recorded yet: see docs/policy.md); a provenance without it is
# refused.
package attest

import data.attest.lib

requester(att) := object.get(att.statement.predicate, ["buildDefinition", "internalParameters", "requester", "id"], "")

deny contains msg if {
	count(lib.provenance) == 0
	msg := "no slsa provenance verified for the artifacts"
}

deny contains msg if {
	some att in lib.provenance
	requester(att) == ""
	msg := sprintf("%s: records no requester", [att.source])
}

deny contains msg if {
	some att in lib.provenance
	id := requester(att)
	id != ""
	not id in data.allowed_requesters
	msg := sprintf("%s: requester %v is not in the allowlist", [att.source, id])
}

allow if count(deny) == 0
