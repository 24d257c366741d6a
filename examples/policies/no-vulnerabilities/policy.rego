# At least one vulnerability scan of the artifact verified, and no scan
# reports a finding at or above data.max_severity. Reads cosign's vuln
# predicate (https://cosign.sigstore.dev/attestation/vuln/v1, with a Trivy
# JSON report as scanner.result) and in-toto's vulns predicate
# (https://in-toto.io/attestation/vulns/v0.1, scanner.result[].severity[]
# with a level name or a CVSS score).
package attest

cosign_type := "https://cosign.sigstore.dev/attestation/vuln/v1"

intoto_type := "https://in-toto.io/attestation/vulns/v0.1"

levels := {"UNKNOWN": 0, "NONE": 0, "LOW": 1, "MEDIUM": 2, "HIGH": 3, "CRITICAL": 4}

# CVSS v3 qualitative rating of a score.
cvss_level(score) := 4 if score >= 9.0
else := 3 if score >= 7.0
else := 2 if score >= 4.0
else := 1 if score > 0
else := 0

# A severity given as a level name or as a numeric score.
level(s) := levels[upper(s)] if {
	upper(s) in object.keys(levels)
} else := cvss_level(to_number(s)) if {
	regex.match(`^[0-9]+(\.[0-9]+)?$`, s)
} else := 4

scans := [att | some att in input.attestations; att.predicateType in {cosign_type, intoto_type}]

# Every finding as [source, id, level].
findings contains [att.source, v.VulnerabilityID, level(v.Severity)] if {
	some att in scans
	att.predicateType == cosign_type
	some r in object.get(att.statement.predicate.scanner.result, "Results", [])
	some v in object.get(r, "Vulnerabilities", [])
}

findings contains [att.source, v.id, level(s.score)] if {
	some att in scans
	att.predicateType == intoto_type
	some v in att.statement.predicate.scanner.result
	some s in v.severity
}

deny contains msg if {
	count(scans) == 0
	msg := "no vulnerability scan verified for the artifacts"
}

deny contains msg if {
	some [source, id, l] in findings
	l >= levels[data.max_severity]
	msg := sprintf("%s: %v is at or above %v", [source, id, data.max_severity])
}

allow if count(deny) == 0
