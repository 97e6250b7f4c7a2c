//! Encryption context: the string map bound to a ciphertext as additional authenticated
//! data. Decrypt must present the same map, byte for byte, or fail.
//!
//! The canonical encoding (docs/formats.md, "Encryption context") sorts pairs by key bytes
//! so the order a caller lists them in does not matter.

use std::collections::BTreeMap;

use crate::aws::error::AwsError;

/// AWS allows at most 8 KiB of context; so do we.
pub const MAX_CONTEXT_BYTES: usize = 8192;

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct EncryptionContext(BTreeMap<String, String>);

impl EncryptionContext {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_pairs<I, K, V>(pairs: I) -> Result<Self, AwsError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            let k = k.into();
            if k.is_empty() {
                return Err(AwsError::validation(
                    "encryption context",
                    "a key must not be empty",
                ));
            }
            if map.insert(k.clone(), v.into()).is_some() {
                return Err(AwsError::validation(
                    "encryption context",
                    format!("key '{k}' is given twice"),
                ));
            }
        }
        let ctx = EncryptionContext(map);
        let size: usize = ctx.0.iter().map(|(k, v)| k.len() + v.len()).sum();
        if size > MAX_CONTEXT_BYTES {
            return Err(AwsError::validation(
                "encryption context",
                format!("{size} bytes is over the {MAX_CONTEXT_BYTES}-byte limit"),
            ));
        }
        Ok(ctx)
    }

    /// A one-pair context, e.g. `cryptvol:lineage = vol-…`.
    pub fn single(key: &str, value: &str) -> Self {
        let mut m = BTreeMap::new();
        m.insert(key.to_string(), value.to_string());
        EncryptionContext(m)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// `u32 count`, then per pair sorted by key bytes: `u32 len, key, u32 len, value`,
    /// all little-endian. Appended to `out` (the blob's AAD).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.0.len() as u32).to_le_bytes());
        for (k, v) in &self.0 {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_of_pairs_does_not_matter() {
        let a = EncryptionContext::from_pairs([("b", "2"), ("a", "1")]).unwrap();
        let b = EncryptionContext::from_pairs([("a", "1"), ("b", "2")]).unwrap();
        let (mut x, mut y) = (vec![], vec![]);
        a.encode_into(&mut x);
        b.encode_into(&mut y);
        assert_eq!(x, y);
    }

    /// The worked example of docs/formats.md, "Encryption context".
    #[test]
    fn worked_example_from_formats_md() {
        let ctx = EncryptionContext::single("cryptvol:lineage", "vol-0123456789abcdef0");
        let mut out = vec![];
        ctx.encode_into(&mut out);
        let mut want = vec![1, 0, 0, 0, 16, 0, 0, 0];
        want.extend_from_slice(b"cryptvol:lineage");
        want.extend_from_slice(&[21, 0, 0, 0]);
        want.extend_from_slice(b"vol-0123456789abcdef0");
        assert_eq!(out, want);
        let mut empty = vec![];
        EncryptionContext::new().encode_into(&mut empty);
        assert_eq!(empty, [0, 0, 0, 0]);
    }

    #[test]
    fn pair_boundaries_are_unambiguous() {
        // "ab"="c" and "a"="bc" must not encode alike.
        let (mut x, mut y) = (vec![], vec![]);
        EncryptionContext::single("ab", "c").encode_into(&mut x);
        EncryptionContext::single("a", "bc").encode_into(&mut y);
        assert_ne!(x, y);
    }

    #[test]
    fn rejects_empty_keys_duplicates_and_oversize() {
        let refused = |r: Result<EncryptionContext, AwsError>, why: &str| {
            assert!(
                matches!(
                    &r,
                    Err(AwsError::Validation { field, message })
                        if field == "encryption context" && message.contains(why)
                ),
                "{r:?}"
            );
        };
        refused(
            EncryptionContext::from_pairs([("", "x")]),
            "must not be empty",
        );
        refused(
            EncryptionContext::from_pairs([("a", "x"), ("a", "y")]),
            "given twice",
        );
        refused(
            EncryptionContext::from_pairs([("a", "x".repeat(9000))]),
            "over the 8192-byte limit",
        );
    }
}
