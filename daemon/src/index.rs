//! The attestation index: every issued envelope by invocation id and by the
//! sha256 of each of its subjects, in an embedded redb database. redb
//! commits are atomic and crash-safe, so a killed daemon leaves the index
//! as it was after the last completed build.

use redb::{MultimapTableDefinition, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// invocation id -> JSON-encoded [`IndexedAttestation`].
const ATTESTATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("attestations");
/// subject sha256 -> "<signed_on> <invocation id>" (sorts by time).
const BY_SUBJECT: MultimapTableDefinition<&str, &str> = MultimapTableDefinition::new("by_subject");

/// One issued attestation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexedAttestation {
    pub invocation_id: String,
    /// The DSSE envelope exactly as issued.
    pub envelope: String,
    /// RFC 3339 UTC.
    pub signed_on: String,
}

/// The index database.
pub struct AttestationIndex {
    db: redb::Database,
}

/// Why the attestation index could not be opened, written or read.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("the attestation index database failed")]
    Database(#[source] redb::Error),
    #[error("the attestation record of invocation {invocation_id:?} cannot be encoded or decoded")]
    Record {
        invocation_id: String,
        #[source]
        source: serde_json::Error,
    },
}

fn index_err(e: impl Into<redb::Error>) -> IndexError {
    IndexError::Database(e.into())
}

impl AttestationIndex {
    /// Opens or creates the database file.
    pub fn open(path: &Path) -> Result<AttestationIndex, IndexError> {
        let db = redb::Database::create(path).map_err(index_err)?;
        let txn = db.begin_write().map_err(index_err)?;
        txn.open_table(ATTESTATIONS).map_err(index_err)?;
        txn.open_multimap_table(BY_SUBJECT).map_err(index_err)?;
        txn.commit().map_err(index_err)?;
        Ok(AttestationIndex { db })
    }

    /// Records an attestation under its invocation id and each subject, in
    /// one transaction.
    pub fn insert(
        &self,
        record: &IndexedAttestation,
        subject_sha256: &[String],
    ) -> Result<(), IndexError> {
        let encoded = serde_json::to_vec(record).map_err(|source| IndexError::Record {
            invocation_id: record.invocation_id.clone(),
            source,
        })?;
        let txn = self.db.begin_write().map_err(index_err)?;
        {
            let mut table = txn.open_table(ATTESTATIONS).map_err(index_err)?;
            table
                .insert(record.invocation_id.as_str(), encoded.as_slice())
                .map_err(index_err)?;
            let mut subjects = txn.open_multimap_table(BY_SUBJECT).map_err(index_err)?;
            let value = format!("{} {}", record.signed_on, record.invocation_id);
            for sha in subject_sha256 {
                subjects
                    .insert(sha.as_str(), value.as_str())
                    .map_err(index_err)?;
            }
        }
        txn.commit().map_err(index_err)
    }

    /// The attestation of one invocation.
    pub fn get(&self, invocation_id: &str) -> Result<Option<IndexedAttestation>, IndexError> {
        let txn = self.db.begin_read().map_err(index_err)?;
        let table = txn.open_table(ATTESTATIONS).map_err(index_err)?;
        match table.get(invocation_id).map_err(index_err)? {
            Some(value) => Ok(Some(serde_json::from_slice(value.value()).map_err(
                |source| IndexError::Record {
                    invocation_id: invocation_id.to_string(),
                    source,
                },
            )?)),
            None => Ok(None),
        }
    }

    /// Every attestation with this subject, newest first.
    pub fn by_subject(&self, sha256: &str) -> Result<Vec<IndexedAttestation>, IndexError> {
        let ids: Vec<String> = {
            let txn = self.db.begin_read().map_err(index_err)?;
            let subjects = txn.open_multimap_table(BY_SUBJECT).map_err(index_err)?;
            let values = subjects.get(sha256).map_err(index_err)?;
            let mut ids = Vec::new();
            for value in values {
                let value = value.map_err(index_err)?;
                if let Some((_, id)) = value.value().split_once(' ') {
                    ids.push(id.to_string());
                }
            }
            ids
        };
        let mut found = Vec::new();
        for id in ids.iter().rev() {
            if let Some(record) = self.get(id)? {
                found.push(record);
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, when: &str) -> IndexedAttestation {
        IndexedAttestation {
            invocation_id: id.into(),
            envelope: format!("{{\"id\":\"{id}\"}}"),
            signed_on: when.into(),
        }
    }

    #[test]
    fn finds_by_invocation_and_subject_newest_first_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        {
            let index = AttestationIndex::open(&path).unwrap();
            index
                .insert(
                    &record("a", "2026-01-01T00:00:00Z"),
                    &["s1".into(), "s2".into()],
                )
                .unwrap();
            index
                .insert(&record("b", "2026-02-01T00:00:00Z"), &["s1".into()])
                .unwrap();
        }
        let index = AttestationIndex::open(&path).unwrap();
        assert_eq!(
            index.get("a").unwrap().unwrap(),
            record("a", "2026-01-01T00:00:00Z")
        );
        assert!(index.get("zzz").unwrap().is_none());
        let ids: Vec<_> = index
            .by_subject("s1")
            .unwrap()
            .into_iter()
            .map(|r| r.invocation_id)
            .collect();
        assert_eq!(ids, ["b", "a"]);
        assert!(index.by_subject("nothing").unwrap().is_empty());
    }
}
