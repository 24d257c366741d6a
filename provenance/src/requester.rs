//! Who asked for a build: the identities a recorded requester answers to,
//! and the patterns that `attestd --allow-client` and `attest verify
//! --requester` match them against. Shared so that the daemon's admission
//! and the verifier's check agree on what a pattern means.
//!
//! The daemon records the requester it observed at
//! `predicate.buildDefinition.internalParameters.requester`
//! ([`REQUESTER_FIELD`]); what the client only claimed never goes there.
//!
//! # Identities
//!
//! - over mutual TLS (`"transport": "mtls"`): each SAN URI
//!   (`spiffe://example.org/runner/7`), each SAN DNS name
//!   (`runner-7.ci.example.org`), and the subject's common name as
//!   `CN=<value>`;
//! - over the Unix socket (`"transport": "unix"`): `uid:<n>` and, when the
//!   daemon found the uid in its passwd database, `user:<name>`;
//! - over plaintext TCP (`"transport": "tcp-plaintext"`): none. Nothing
//!   observed about such a peer identifies it, so no pattern matches it.
//!
//! # Patterns
//!
//! A pattern matches an identity when it equals it, where each `*` in the
//! pattern stands for any run of characters other than `/` (zero or more):
//! `spiffe://example.org/runner/*` matches `spiffe://example.org/runner/7`
//! but not `spiffe://example.org/runner/7/x`; `*.ci.example.org` matches
//! `a.ci.example.org` and `a.b.ci.example.org` (a DNS name has no `/`).
//! Matching is case-sensitive and a requester matches when any one of its
//! identities does.

use serde_json::Value;

/// `internalParameters` field holding the requester the daemon observed.
pub const REQUESTER_FIELD: &str = "requester";

/// Does `pattern` match `identity`? `*` matches any run of characters
/// other than `/`; everything else matches itself.
///
/// One pass over the identity keeping the set of pattern positions reached
/// (O(pattern x identity)), so a long name from a certificate cannot make
/// a pattern with several stars backtrack exponentially.
pub fn pattern_matches(pattern: &str, identity: &str) -> bool {
    let p = pattern.as_bytes();
    // A star may match nothing: a position before one reaches the next.
    let close = |reach: &mut [bool]| {
        for i in 0..p.len() {
            if reach[i] && p[i] == b'*' {
                reach[i + 1] = true;
            }
        }
    };
    let mut reach = vec![false; p.len() + 1];
    reach[0] = true;
    close(&mut reach);
    for &c in identity.as_bytes() {
        let mut next = vec![false; p.len() + 1];
        for i in 0..p.len() {
            if !reach[i] {
                continue;
            }
            if p[i] == b'*' {
                next[i] = c != b'/';
            } else if p[i] == c {
                next[i + 1] = true;
            }
        }
        close(&mut next);
        reach = next;
    }
    reach[p.len()]
}

/// The identities a recorded requester (the JSON object under
/// [`REQUESTER_FIELD`]) answers to; empty when it records none (an unknown
/// transport, plaintext TCP, or a value of the wrong shape).
pub fn identities(requester: &Value) -> Vec<String> {
    let mut ids = Vec::new();
    match requester.get("transport").and_then(Value::as_str) {
        Some("mtls") => {
            let cert = &requester["certificate"];
            for field in ["uris", "dnsNames"] {
                if let Some(list) = cert.get(field).and_then(Value::as_array) {
                    ids.extend(list.iter().filter_map(Value::as_str).map(String::from));
                }
            }
            if let Some(cn) = cert.get("commonName").and_then(Value::as_str) {
                ids.push(format!("CN={cn}"));
            }
        }
        Some("unix") => {
            if let Some(uid) = requester.get("uid").and_then(Value::as_u64) {
                ids.push(format!("uid:{uid}"));
            }
            if let Some(user) = requester.get("user").and_then(Value::as_str) {
                ids.push(format!("user:{user}"));
            }
        }
        _ => {}
    }
    ids
}

/// The first identity of `requester` that `pattern` matches.
pub fn matching_identity(pattern: &str, requester: &Value) -> Option<String> {
    identities(requester)
        .into_iter()
        .find(|id| pattern_matches(pattern, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_star_stays_within_one_path_segment() {
        let p = "spiffe://example.org/runner/*";
        assert!(pattern_matches(p, "spiffe://example.org/runner/7"));
        assert!(pattern_matches(p, "spiffe://example.org/runner/"));
        assert!(!pattern_matches(p, "spiffe://example.org/runner/7/x"));
        assert!(!pattern_matches(p, "spiffe://example.org/runnerx/7"));
        assert!(!pattern_matches(p, "spiffe://example.org/admin/7"));
    }

    #[test]
    fn without_a_star_a_pattern_must_equal_the_identity() {
        assert!(pattern_matches("CN=runner", "CN=runner"));
        assert!(!pattern_matches("CN=runner", "CN=runner2"));
        assert!(!pattern_matches("CN=runner", "cn=runner"));
        assert!(!pattern_matches("", "x"));
    }

    #[test]
    fn many_stars_over_a_long_identity_answer_at_once() {
        let identity = "a".repeat(20_000);
        let started = std::time::Instant::now();
        assert!(!pattern_matches("*a*a*a*a*a*a*b", &identity));
        assert!(pattern_matches("*a*a*a*a*a*a*", &identity));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn consecutive_stars_act_as_one() {
        assert!(pattern_matches("a**c", "abc"));
        assert!(pattern_matches("a**c", "ac"));
        assert!(!pattern_matches("a**c", "a/c"));
    }

    #[test]
    fn a_star_in_a_dns_name_spans_labels() {
        assert!(pattern_matches("*.ci.example.org", "a.b.ci.example.org"));
        assert!(!pattern_matches("*.ci.example.org", "ci.example.org"));
        assert!(pattern_matches("a*c*e", "abcde"));
        assert!(!pattern_matches("a*c*e", "abcdef"));
    }

    #[test]
    fn an_mtls_requester_answers_to_its_sans_and_common_name() {
        let r = json!({"transport": "mtls", "certificate": {
            "uris": ["spiffe://example.org/runner/7"],
            "dnsNames": ["runner-7.example.org"],
            "commonName": "runner 7",
        }});
        assert_eq!(
            identities(&r),
            [
                "spiffe://example.org/runner/7",
                "runner-7.example.org",
                "CN=runner 7"
            ]
        );
        assert_eq!(
            matching_identity("spiffe://example.org/*/7", &r).as_deref(),
            Some("spiffe://example.org/runner/7")
        );
    }

    #[test]
    fn a_unix_requester_answers_to_its_uid_and_user_name() {
        let r = json!({"transport": "unix", "uid": 1000, "gid": 1000, "pid": 4, "user": "ci"});
        assert_eq!(identities(&r), ["uid:1000", "user:ci"]);
    }

    #[test]
    fn plaintext_tcp_and_unknown_shapes_answer_to_nothing() {
        for r in [
            json!({"transport": "tcp-plaintext", "peerAddress": "127.0.0.1:9"}),
            json!({"transport": "carrier-pigeon", "uid": 0}),
            json!("uid:0"),
            json!(null),
        ] {
            assert!(identities(&r).is_empty(), "{r}");
            assert_eq!(matching_identity("*", &r), None, "{r}");
        }
    }
}
