# The artifact was built from data.repository at one of data.branches, as
# every SLSA provenance records it: attestd's externalParameters.source,
# GitHub Actions' externalParameters.workflow (SLSA v1) or
# invocation.configSource (SLSA v0.2).
package attest

import data.attest.lib

# "git+https://github.com/o/r.git" -> "https://github.com/o/r"
normalize(uri) := trim_suffix(trim_prefix(uri, "git+"), ".git")

# The sources of each provenance, as [repository, ref] pairs.
source(att) := [normalize(s.uri), s.ref] if {
	att.predicateType == lib.slsa_v1
	s := att.statement.predicate.buildDefinition.externalParameters.source
} else := [normalize(w.repository), w.ref] if {
	att.predicateType == lib.slsa_v1
	w := att.statement.predicate.buildDefinition.externalParameters.workflow
} else := [normalize(parts[0]), parts[1]] if {
	att.predicateType == lib.slsa_v02
	parts := split(att.statement.predicate.invocation.configSource.uri, "@")
	count(parts) == 2
} else := ["", ""]

deny contains msg if {
	count(lib.provenance) == 0
	msg := "no slsa provenance verified for the artifacts"
}

deny contains msg if {
	some att in lib.provenance
	[repo, _] := source(att)
	repo != data.repository
	msg := sprintf("%s: built from repository %v, expected %v", [att.source, repo, data.repository])
}

deny contains msg if {
	some att in lib.provenance
	[_, ref] := source(att)
	not ref in data.branches
	msg := sprintf("%s: built from ref %v, expected one of %v", [att.source, ref, data.branches])
}

allow if count(deny) == 0
