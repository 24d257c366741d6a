# Only requesters in data.allowed_requesters may have asked for the build.
# Reads buildDefinition.internalParameters.requester, which the daemon
# records from the connection (docs/buildtype-v1.md, "Requester"): a Unix
# peer is named `uid:N` and `user:NAME`, an mTLS client by its
# certificate's SAN URIs, DNS names and `CN=NAME`, as `attest verify
# --requester` names them. A provenance without a requester is refused.
package attest

import data.attest.lib

recorded(att) := object.get(att.statement.predicate, ["buildDefinition", "internalParameters", "requester"], {})

identities(r) := {sprintf("uid:%v", [r.uid])} | {sprintf("user:%v", [r.user]) | r.user != null} if r.transport == "unix"

identities(r) := ({u | some u in r.certificate.uris} | {d | some d in r.certificate.dnsNames}) | {sprintf("CN=%v", [r.certificate.commonName]) | r.certificate.commonName != null} if r.transport == "mtls"

ids(att) := object.get({"x": identities(recorded(att))}, "x", set())

requester(att) := concat(",", sort([i | some i in ids(att)]))

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
	count({i | some i in ids(att); i in data.allowed_requesters}) == 0
	msg := sprintf("%s: requester %v is not in the allowlist", [att.source, id])
}

allow if count(deny) == 0
