//! Entry names as bytes. A filesystem name is any bytes but `/` and NUL;
//! the `Directory` messages carry a UTF-8 name in `name` and any other
//! name in `raw_name`, and this module is the one place that picks the
//! field, so that one name has exactly one encoding (the Merkle digests are
//! over these bytes). Symlink targets follow the same rule.
//!
//! It also holds the `percent-bytes` encoding the provenance uses to name a
//! path that is not UTF-8 in a JSON string (docs/buildtype-v1.md, "Paths
//! that are not UTF-8").

use attest_proto::v1::{DirectoryNode, FileNode, SymlinkNode};

/// The value of the `pathEncoding` annotation (and the name of the
/// encoding) for a provenance name that encodes a non-UTF-8 path.
pub const PERCENT_BYTES: &str = "percent-bytes";

/// Splits a name (or symlink target) into its two wire fields: `(name,
/// raw_name)` with the UTF-8 one set and the other empty.
pub fn split_name(bytes: Vec<u8>) -> (String, Vec<u8>) {
    match String::from_utf8(bytes) {
        Ok(name) => (name, Vec::new()),
        Err(not_utf8) => (String::new(), not_utf8.into_bytes()),
    }
}

/// The bytes of a name (or path) carried as a UTF-8 field and a raw one,
/// as [`split_name`] makes them: the raw one when set.
pub fn joined<'a>(name: &'a str, raw_name: &'a [u8]) -> &'a [u8] {
    if raw_name.is_empty() {
        name.as_bytes()
    } else {
        raw_name
    }
}

/// Checks that a (name, raw_name) pair is the one encoding of its name:
/// not both set, and `raw_name` only for bytes that are not UTF-8.
pub(crate) fn check_canonical(name: &str, raw_name: &[u8]) -> Result<(), &'static str> {
    if raw_name.is_empty() {
        return Ok(());
    }
    if !name.is_empty() {
        return Err("both the UTF-8 and the raw form are set");
    }
    if std::str::from_utf8(raw_name).is_ok() {
        return Err("the raw form holds valid UTF-8, which goes in the UTF-8 field");
    }
    Ok(())
}

/// A `Directory` entry's name as bytes, whichever field carries it.
pub trait EntryName {
    /// The name's bytes.
    fn name_bytes(&self) -> &[u8];
    /// The name's wire fields, for [`check_canonical`].
    fn name_fields(&self) -> (&str, &[u8]);
}

impl EntryName for FileNode {
    fn name_bytes(&self) -> &[u8] {
        joined(&self.name, &self.raw_name)
    }
    fn name_fields(&self) -> (&str, &[u8]) {
        (&self.name, &self.raw_name)
    }
}

impl EntryName for DirectoryNode {
    fn name_bytes(&self) -> &[u8] {
        joined(&self.name, &self.raw_name)
    }
    fn name_fields(&self) -> (&str, &[u8]) {
        (&self.name, &self.raw_name)
    }
}

impl EntryName for SymlinkNode {
    fn name_bytes(&self) -> &[u8] {
        joined(&self.name, &self.raw_name)
    }
    fn name_fields(&self) -> (&str, &[u8]) {
        (&self.name, &self.raw_name)
    }
}

/// A symlink's target as bytes, whichever field carries it.
pub fn symlink_target(link: &SymlinkNode) -> &[u8] {
    joined(&link.target, &link.raw_target)
}

/// Encodes a path that is not valid UTF-8 as a string: the valid UTF-8
/// stretches are kept, with each `%` written `%25`; every byte that is
/// not part of valid UTF-8 is written `%` and two uppercase hex digits.
/// (A UTF-8 path is never given this encoding: it is named as it is.)
pub fn percent_bytes_encode(path: &[u8]) -> String {
    let mut out = String::with_capacity(path.len() + 16);
    for chunk in path.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '%' {
                out.push_str("%25");
            } else {
                out.push(c);
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Why a string is not a canonical `percent-bytes` name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PercentBytesError {
    /// A `%` not followed by two uppercase hex digits.
    #[error("\"%\" at byte {0} is not followed by two uppercase hex digits")]
    BadEscape(usize),
    /// The decoded bytes are valid UTF-8: such a path is never encoded.
    #[error("the decoded path is valid UTF-8, so it would not be encoded")]
    Utf8,
    /// The string is not the encoding of the bytes it decodes to (e.g. a
    /// byte escaped that is part of valid UTF-8).
    #[error("not the canonical encoding of the path it decodes to")]
    NotCanonical,
}

/// Decodes a `percent-bytes` name back to the path's bytes, refusing any
/// string that [`percent_bytes_encode`] would not have produced, so that a
/// path has one name.
pub fn percent_bytes_decode(name: &str) -> Result<Vec<u8>, PercentBytesError> {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = bytes
                .get(at + 1..at + 3)
                .filter(|h| h.iter().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F')))
                .ok_or(PercentBytesError::BadEscape(at))?;
            let hex = std::str::from_utf8(hex).expect("checked ASCII");
            out.push(u8::from_str_radix(hex, 16).expect("checked hex"));
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    if std::str::from_utf8(&out).is_ok() {
        return Err(PercentBytesError::Utf8);
    }
    if percent_bytes_encode(&out) != name {
        return Err(PercentBytesError::NotCanonical);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_exactly_one_field() {
        assert_eq!(split_name(b"a.txt".to_vec()), ("a.txt".into(), vec![]));
        assert_eq!(
            split_name(b"caf\xe9".to_vec()),
            (String::new(), b"caf\xe9".to_vec())
        );
        assert!(check_canonical("a", b"").is_ok());
        assert!(check_canonical("", b"caf\xe9").is_ok());
        assert!(check_canonical("a", b"caf\xe9").is_err());
        assert!(check_canonical("", b"cafe").is_err());
    }

    #[test]
    fn percent_bytes_round_trips_and_keeps_utf8_readable() {
        for (path, encoded) in [
            (&b"src/caf\xe9.txt"[..], "src/caf%E9.txt"),
            (b"100%/\xff\xfe", "100%25/%FF%FE"),
            (b"d\xc3\xa9j\xc3/\xc3\xa9", "d\u{e9}j%C3/\u{e9}"),
            (b"%E9\x80", "%25E9%80"),
        ] {
            assert_eq!(percent_bytes_encode(path), encoded);
            assert_eq!(percent_bytes_decode(encoded).unwrap(), path);
        }
    }

    #[test]
    fn percent_bytes_round_trips_every_short_byte_string() {
        // Every string of up to two bytes, and every one of up to four over
        // bytes that make escapes, partial and whole UTF-8 sequences.
        let mut cases: Vec<Vec<u8>> = (0..=u16::MAX).map(|n| n.to_be_bytes().to_vec()).collect();
        cases.extend((0..=u8::MAX).map(|b| vec![b]));
        let alphabet = [
            b'%', b'2', b'5', b'E', b'a', 0xc3, 0xa9, 0xe9, 0xf0, 0x9f, 0xff,
        ];
        for n in 0..alphabet.len().pow(4) {
            let mut case = Vec::new();
            let mut rest = n;
            for _ in 0..4 {
                case.push(alphabet[rest % alphabet.len()]);
                rest /= alphabet.len();
            }
            cases.push(case);
        }
        for case in cases {
            if std::str::from_utf8(&case).is_ok() {
                continue;
            }
            let encoded = percent_bytes_encode(&case);
            assert_eq!(
                percent_bytes_decode(&encoded),
                Ok(case.clone()),
                "{encoded}"
            );
        }
    }

    #[test]
    fn percent_bytes_refuses_every_string_it_would_not_produce() {
        assert_eq!(
            percent_bytes_decode("caf%e9"),
            Err(PercentBytesError::BadEscape(3))
        );
        assert_eq!(
            percent_bytes_decode("caf%E"),
            Err(PercentBytesError::BadEscape(3))
        );
        assert_eq!(percent_bytes_decode("cafe"), Err(PercentBytesError::Utf8));
        assert_eq!(percent_bytes_decode("100%25"), Err(PercentBytesError::Utf8));
        // "%C3%A9" decodes to a valid "é" next to an invalid byte: é must
        // be written as itself.
        assert_eq!(
            percent_bytes_decode("%C3%A9%FF"),
            Err(PercentBytesError::NotCanonical)
        );
        // A literal "%" must be escaped.
        assert_eq!(
            percent_bytes_decode("%FF%"),
            Err(PercentBytesError::BadEscape(3))
        );
        // "%41" is "A", which is written as itself.
        assert_eq!(
            percent_bytes_decode("%41%FF"),
            Err(PercentBytesError::NotCanonical)
        );
    }
}
