# Only builders named in data.allowed_builders may have built the artifact:
# every SLSA provenance that verified must name one of them.
package attest

import data.attest.lib

deny contains msg if {
	count(lib.provenance) == 0
	msg := "no slsa provenance verified for the artifacts"
}

deny contains msg if {
	some att in lib.provenance
	not lib.builder_id(att) in data.allowed_builders
	msg := sprintf("%s: builder %v is not in the allowlist", [att.source, lib.builder_id(att)])
}

allow if count(deny) == 0
