# The build was hermetic and no option weakened its sandbox: attestd's
# internalParameters.hermetic is true and dangerousOptions is empty. A
# provenance that does not say so (GitHub Actions', SLSA v0.2) is refused.
package attest

import data.attest.lib

hermetic(att) if {
	att.predicateType == lib.slsa_v1
	ip := att.statement.predicate.buildDefinition.internalParameters
	ip.hermetic == true
	count(object.get(ip, "dangerousOptions", [])) == 0
}

deny contains msg if {
	count(lib.provenance) == 0
	msg := "no slsa provenance verified for the artifacts"
}

deny contains msg if {
	some att in lib.provenance
	not hermetic(att)
	options := object.get(att.statement.predicate, ["buildDefinition", "internalParameters", "dangerousOptions"], [])
	msg := sprintf("%s: not a hermetic build (dangerous options: %v)", [att.source, options])
}

allow if count(deny) == 0
