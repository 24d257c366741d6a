//! Who asked for a build, as the daemon observed it on the connection:
//! never what the client says about itself.
//!
//! - Unix socket: the peer's uid, gid and pid from SO_PEERCRED (taken by
//!   tonic through tokio's `UnixStream::peer_cred`, when the connection was
//!   accepted), and the user name the daemon's passwd database gives the
//!   uid.
//! - TCP with mutual TLS: the client certificate verified against
//!   `--client-ca` (`crate::tls`: chain, validity period, client-auth
//!   usage): its SAN URIs and DNS names, subject, common name and the
//!   sha256 of its DER.
//! - Plaintext TCP (`--dangerously-allow-plaintext-tcp`): only the peer's
//!   address, which identifies nobody.
//!
//! The identities these answer to, and the `--allow-client` patterns, are
//! `attest_provenance::requester`'s, so the daemon's admission and `attest
//! verify --requester` agree.

use crate::tls::{ClientVerdict, MtlsConnectInfo};
use serde_json::{json, Value};
use std::net::SocketAddr;
use tonic::transport::server::{TcpConnectInfo, UdsConnectInfo};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Why a caller could not be identified or is not allowed.
#[derive(Debug, thiserror::Error)]
pub enum RequesterError {
    /// The connection carried no information about its peer (a transport
    /// this daemon does not serve).
    #[error("the daemon cannot tell who is calling on this connection")]
    Unobserved,
    /// A TLS connection without a client certificate.
    #[error("no client certificate was presented; this daemon's TCP listeners require one its --client-ca signed")]
    NoClientCertificate,
    /// A client certificate `--client-ca`'s verifier refused (expired, an
    /// unknown issuer, not for client authentication...).
    #[error("the client certificate was refused")]
    CertificateRefused(#[source] rustls::Error),
    /// The verified certificate could not be parsed for its names.
    #[error("cannot read the names of the client certificate {sha256}")]
    Certificate {
        sha256: String,
        #[source]
        source: x509_parser::error::X509Error,
    },
    /// Verified, but no `--allow-client` pattern matches.
    #[error(
        "client {identity} is not allowed to request builds (no --allow-client pattern matches it)"
    )]
    NotAllowed { identity: String },
}

/// The verified client certificate of an mTLS connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// sha256 of the certificate's DER, hex.
    pub sha256: String,
    /// The subject, RFC 4514 style (`CN=runner,O=example`).
    pub subject: String,
    pub common_name: Option<String>,
    pub uris: Vec<String>,
    pub dns_names: Vec<String>,
}

/// The requester of one build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requester {
    Unix {
        uid: u32,
        gid: u32,
        /// Linux always reports it; kept optional as tokio does.
        pid: Option<i32>,
        /// From the passwd database; None when the uid has no entry.
        user: Option<String>,
    },
    Mtls {
        peer: Option<SocketAddr>,
        certificate: ClientCertificate,
    },
    PlaintextTcp {
        peer: Option<SocketAddr>,
    },
}

impl Requester {
    /// Reads the requester of a call from what tonic recorded about its
    /// connection.
    pub fn observe<T>(request: &tonic::Request<T>) -> Result<Requester, RequesterError> {
        let ext = request.extensions();
        if let Some(info) = ext.get::<UdsConnectInfo>() {
            let cred = info.peer_cred.ok_or(RequesterError::Unobserved)?;
            let uid = cred.uid();
            let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| u.name);
            return Ok(Requester::Unix {
                uid,
                gid: cred.gid(),
                pid: cred.pid(),
                user,
            });
        }
        if let Some(info) = ext.get::<MtlsConnectInfo>() {
            let certs = match &info.verdict {
                ClientVerdict::Verified(certs) => certs,
                ClientVerdict::NoCertificate => return Err(RequesterError::NoClientCertificate),
                ClientVerdict::Refused(e) => {
                    return Err(RequesterError::CertificateRefused(e.clone()))
                }
            };
            // The first is the end-entity certificate that was verified;
            // the rest are the intermediates the client sent.
            let leaf = certs.first().ok_or(RequesterError::NoClientCertificate)?;
            return Ok(Requester::Mtls {
                peer: info.remote_addr,
                certificate: ClientCertificate::parse(leaf.as_ref())?,
            });
        }
        if let Some(info) = ext.get::<TcpConnectInfo>() {
            return Ok(Requester::PlaintextTcp {
                peer: info.remote_addr(),
            });
        }
        Err(RequesterError::Unobserved)
    }

    /// The JSON recorded at `internalParameters.requester`
    /// (docs/buildtype-v1.md, "Requester").
    pub fn to_json(&self) -> Value {
        match self {
            Requester::Unix {
                uid,
                gid,
                pid,
                user,
            } => json!({
                "transport": "unix",
                "uid": uid,
                "gid": gid,
                "pid": pid,
                "user": user,
            }),
            Requester::Mtls { peer, certificate } => json!({
                "transport": "mtls",
                "peerAddress": peer.map(|p| p.to_string()),
                "certificate": {
                    "sha256": certificate.sha256,
                    "subject": certificate.subject,
                    "commonName": certificate.common_name,
                    "uris": certificate.uris,
                    "dnsNames": certificate.dns_names,
                },
            }),
            Requester::PlaintextTcp { peer } => json!({
                "transport": "tcp-plaintext",
                "peerAddress": peer.map(|p| p.to_string()),
            }),
        }
    }

    /// How log lines and refusals name the requester: its first identity,
    /// else what little is known.
    pub fn describe(&self) -> String {
        let ids = attest_provenance::requester::identities(&self.to_json());
        match (self, ids.first()) {
            (Requester::Mtls { certificate, .. }, _) if ids.is_empty() => {
                format!("certificate sha256:{} with no name", certificate.sha256)
            }
            (Requester::Mtls { certificate, .. }, _) => {
                format!(
                    "{} (certificate sha256:{})",
                    ids.join(", "),
                    certificate.sha256
                )
            }
            (_, Some(id)) => id.clone(),
            (Requester::PlaintextTcp { peer }, None) => format!(
                "plaintext TCP peer {}",
                peer.map_or("unknown".into(), |p| p.to_string())
            ),
            (Requester::Unix { .. }, None) => "a Unix-socket peer".into(),
        }
    }
}

impl ClientCertificate {
    /// The names of a DER certificate that rustls has already verified.
    pub fn parse(der: &[u8]) -> Result<ClientCertificate, RequesterError> {
        let sha256 = hex::encode(ring::digest::digest(&ring::digest::SHA256, der));
        let invalid = |source| RequesterError::Certificate {
            sha256: sha256.clone(),
            source,
        };
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| match e {
            x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => invalid(e),
            x509_parser::nom::Err::Incomplete(_) => {
                invalid(x509_parser::error::X509Error::InvalidCertificate)
            }
        })?;
        let mut uris = Vec::new();
        let mut dns_names = Vec::new();
        if let Some(san) = cert.subject_alternative_name().map_err(invalid)? {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(uri) => uris.push(uri.to_string()),
                    GeneralName::DNSName(dns) => dns_names.push(dns.to_string()),
                    _ => {}
                }
            }
        }
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(String::from);
        Ok(ClientCertificate {
            subject: cert.subject().to_string(),
            sha256,
            common_name,
            uris,
            dns_names,
        })
    }
}

/// `--allow-client`: which verified client certificates may call the TCP
/// listeners. Empty: every certificate `--client-ca` signed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    pub patterns: Vec<String>,
}

impl AllowList {
    /// Admits or refuses a requester on a TLS listener. The Unix socket is
    /// governed by its mode and group, not by this list.
    pub fn admit(&self, requester: &Requester) -> Result<(), RequesterError> {
        if self.patterns.is_empty() {
            return Ok(());
        }
        let recorded = requester.to_json();
        if self
            .patterns
            .iter()
            .any(|p| attest_provenance::requester::matching_identity(p, &recorded).is_some())
        {
            return Ok(());
        }
        Err(RequesterError::NotAllowed {
            identity: requester.describe(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(sans: Vec<rcgen::SanType>, cn: &str) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_certificate_gives_its_san_uris_dns_names_common_name_and_fingerprint() {
        let der = certificate(
            vec![
                rcgen::SanType::URI("spiffe://example.org/runner/7".try_into().unwrap()),
                rcgen::SanType::DnsName("runner-7.example.org".try_into().unwrap()),
            ],
            "runner 7",
        );
        let cert = ClientCertificate::parse(&der).unwrap();
        assert_eq!(cert.uris, ["spiffe://example.org/runner/7"]);
        assert_eq!(cert.dns_names, ["runner-7.example.org"]);
        assert_eq!(cert.common_name.as_deref(), Some("runner 7"));
        assert_eq!(cert.subject, "CN=runner 7");
        assert_eq!(
            cert.sha256,
            hex::encode(ring::digest::digest(&ring::digest::SHA256, &der))
        );
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(matches!(
            ClientCertificate::parse(b"not der"),
            Err(RequesterError::Certificate { .. })
        ));
    }

    fn mtls(uri: &str) -> Requester {
        Requester::Mtls {
            peer: None,
            certificate: ClientCertificate {
                sha256: "ab".into(),
                subject: "CN=x".into(),
                common_name: Some("x".into()),
                uris: vec![uri.into()],
                dns_names: vec![],
            },
        }
    }

    #[test]
    fn the_allow_list_admits_a_matching_identity_and_names_a_refused_one() {
        let list = AllowList {
            patterns: vec!["spiffe://example.org/runner/*".into()],
        };
        assert!(list.admit(&mtls("spiffe://example.org/runner/7")).is_ok());
        match list.admit(&mtls("spiffe://example.org/admin/1")) {
            Err(RequesterError::NotAllowed { identity }) => assert_eq!(
                identity,
                "spiffe://example.org/admin/1, CN=x (certificate sha256:ab)"
            ),
            other => panic!("{other:?}"),
        }
        assert!(AllowList::default()
            .admit(&mtls("spiffe://example.org/admin/1"))
            .is_ok());
    }

    #[test]
    fn a_plaintext_peer_matches_no_pattern() {
        let list = AllowList {
            patterns: vec!["*".into()],
        };
        assert!(matches!(
            list.admit(&Requester::PlaintextTcp { peer: None }),
            Err(RequesterError::NotAllowed { .. })
        ));
    }
}
