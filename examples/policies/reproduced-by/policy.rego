# At least data.min_rebuilders independent rebuilders reproduced the
# artifact: reproducibility verdicts (predicate type
# https://attestd.dev/reproducibility/v1, written by `attest rebuild` and
# documented in docs/reproducibility-v1.md) with result reproducible, about
# the provenance that verified here (by its envelope digest), made from a
# verified original, signed by keys that did not sign that provenance, each
# key counted once. Any verdict not-reproducible refuses.
package attest

import data.attest.lib

verdict_type := "https://attestd.dev/reproducibility/v1"

verdicts := [att | some att in input.attestations; att.predicateType == verdict_type]

provenance_signers := {k | some att in lib.provenance; some k in att.signerKeyids}

provenance_digests := {att.envelopeSha256 | some att in lib.provenance}

# Keys of independent rebuilders that reproduced this provenance's build.
reproducers := {k |
	some v in verdicts
	v.statement.predicate.result == "reproducible"
	v.statement.predicate.originalVerified == true
	v.statement.predicate.original.envelopeSha256 in provenance_digests
	some k in v.signerKeyids
	not k in provenance_signers
}

deny contains msg if {
	count(lib.provenance) == 0
	msg := "no slsa provenance verified for the artifacts"
}

deny contains msg if {
	count(reproducers) < data.min_rebuilders
	msg := sprintf("reproduced by %v independent rebuilder(s), expected at least %v", [count(reproducers), data.min_rebuilders])
}

deny contains msg if {
	some v in verdicts
	v.statement.predicate.result != "reproducible"
	msg := sprintf("%s: rebuilder %v got %v", [v.source, v.statement.predicate.rebuild.builderId, v.statement.predicate.result])
}

allow if count(deny) == 0
