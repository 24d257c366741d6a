# The build finished at most data.max_age_seconds before the verification
# (input.context.now), and not in the future beyond five minutes of skew.
# SLSA v1 runDetails.metadata.finishedOn, v0.2 metadata.buildFinishedOn; a
# provenance without that time is refused.
package attest

import data.attest.lib

finished(att) := object.get(att.statement.predicate, ["runDetails", "metadata", "finishedOn"], "") if {
	att.predicateType == lib.slsa_v1
} else := object.get(att.statement.predicate, ["metadata", "buildFinishedOn"], "") if {
	att.predicateType == lib.slsa_v02
}

now_ns := time.parse_rfc3339_ns(input.context.now)

age_s(att) := (now_ns - time.parse_rfc3339_ns(finished(att))) / 1000000000

deny contains msg if {
	count(lib.provenance) == 0
	msg := "no slsa provenance verified for the artifacts"
}

deny contains msg if {
	some att in lib.provenance
	finished(att) == ""
	msg := sprintf("%s: records no finish time", [att.source])
}

deny contains msg if {
	some att in lib.provenance
	finished(att) != ""
	age_s(att) > data.max_age_seconds
	msg := sprintf("%s: built %v seconds ago, more than %v", [att.source, round(age_s(att)), data.max_age_seconds])
}

deny contains msg if {
	some att in lib.provenance
	finished(att) != ""
	age_s(att) < -300
	msg := sprintf("%s: finished in the future (%v)", [att.source, finished(att)])
}

allow if count(deny) == 0
