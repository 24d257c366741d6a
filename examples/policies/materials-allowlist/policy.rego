# Every material the build resolved comes from an allowed place: its uri
# starts with one of data.allowed_uri_prefixes, or one of its digests
# ("ALG:HEX") is in data.allowed_digests (attestd's input-root has no uri:
# it is allowed by digest). SLSA v1 resolvedDependencies, v0.2 materials.
package attest

import data.attest.lib

materials(att) := object.get(att.statement.predicate, ["buildDefinition", "resolvedDependencies"], []) if {
	att.predicateType == lib.slsa_v1
} else := object.get(att.statement.predicate, "materials", []) if {
	att.predicateType == lib.slsa_v02
}

allowed(m) if {
	some prefix in data.allowed_uri_prefixes
	startswith(object.get(m, "uri", ""), prefix)
}

allowed(m) if {
	some alg, hex in object.get(m, "digest", {})
	sprintf("%s:%s", [alg, hex]) in data.allowed_digests
}

deny contains msg if {
	count(lib.provenance) == 0
	msg := "no slsa provenance verified for the artifacts"
}

deny contains msg if {
	some att in lib.provenance
	some m in materials(att)
	not allowed(m)
	what := object.get(m, "uri", object.get(m, "name", "(unnamed)"))
	msg := sprintf("%s: material %v is not from an allowed uri or digest", [att.source, what])
}

allow if count(deny) == 0
