//! Digest (seal) files: what a sealed log file held, keyed-hashed and chained to the digest
//! of the log file before it.
//!
//! Canonical encoding: `digestHash = keyed_blake3(mac_key, "cryptvol audit digest v1" ||
//! body)` where `body` is the compact JSON (serde_json, no whitespace) of the object WITHOUT
//! `digestHash`, members in exactly this order: digestVersion, logFile, firstSeq, lastSeq,
//! eventCount, logFileBlake3, lastEventHash, previousDigestHash, sealedAt (the order of
//! [`DigestBody`]'s fields). The file holds `body` with `,"digestHash":"<hex>"` inserted
//! before its closing brace, then `\n`. A reader re-encodes the parsed values, so the check
//! depends on the values only, not on how the file spaces or orders them.

use serde::{Deserialize, Serialize};

use super::chain::{self, Hash};
use crate::crypto::Key256;

pub(super) const DIGEST_VERSION: u32 = 1;
const DIGEST_CONTEXT: &[u8] = b"cryptvol audit digest v1";

/// Everything in a digest file except `digestHash`; field order is the canonical order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct DigestBody {
    pub digest_version: u32,
    pub log_file: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub event_count: u64,
    /// Unkeyed BLAKE3 of the whole log file.
    pub log_file_blake3: String,
    pub last_event_hash: String,
    /// `digestHash` of the previous log file's digest; null for the first sealed file.
    pub previous_digest_hash: Option<String>,
    /// RFC 3339, UTC.
    pub sealed_at: String,
}

/// A digest file as read: its body and the `digestHash` it claims.
#[derive(Debug, Clone)]
pub(super) struct Digest {
    pub body: DigestBody,
    pub digest_hash: String,
}

impl DigestBody {
    fn canonical(&self) -> Vec<u8> {
        // A struct of strings and integers always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The keyed hash over the canonical encoding.
    pub fn hash(&self, key: &Key256) -> Hash {
        let mut h = blake3::Hasher::new_keyed(key.expose());
        h.update(DIGEST_CONTEXT);
        h.update(&self.canonical());
        *h.finalize().as_bytes()
    }

    /// The file's bytes, with `digestHash` as the last member; returns them and the hash.
    pub fn encode(&self, key: &Key256) -> (Vec<u8>, Hash) {
        let hash = self.hash(key);
        let mut out = self.canonical();
        out.pop();
        out.extend_from_slice(b",\"digestHash\":\"");
        out.extend_from_slice(hex::encode(hash).as_bytes());
        out.extend_from_slice(b"\"}\n");
        (out, hash)
    }
}

impl Digest {
    /// Parses a digest file; the error says what is wrong (the key is not checked here).
    pub fn parse(bytes: &[u8]) -> Result<Digest, String> {
        let mut v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("it is not JSON ({e})"))?;
        let obj = v.as_object_mut().ok_or("it is not a JSON object")?;
        let version = obj.get("digestVersion").and_then(|v| v.as_u64());
        if version != Some(u64::from(DIGEST_VERSION)) {
            return Err(format!(
                "its digestVersion is {}, and this cryptvol reads version {DIGEST_VERSION} only (upgrade cryptvol)",
                obj.get("digestVersion")
                    .map_or("missing".to_owned(), |v| v.to_string())
            ));
        }
        let digest_hash = match obj.remove("digestHash") {
            Some(serde_json::Value::String(s)) => s,
            _ => return Err("it has no digestHash string".to_owned()),
        };
        let body = serde_json::from_value(v).map_err(|e| format!("{e}"))?;
        Ok(Digest { body, digest_hash })
    }

    /// Whether `digestHash` is the keyed hash of the body under `key`.
    pub fn is_authentic(&self, key: &Key256) -> bool {
        chain::parse_hex(self.digest_hash.as_bytes()) == Some(self.body.hash(key))
    }

    /// The last event's seq and hash, for continuing the chain after this file.
    pub fn chain_end(&self) -> Option<(u64, Hash)> {
        let h = chain::parse_hex(self.body.last_event_hash.as_bytes())?;
        Some((self.body.last_seq, h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> DigestBody {
        DigestBody {
            digest_version: 1,
            log_file: "20261129-000000000001.jsonl".into(),
            first_seq: 1,
            last_seq: 40,
            event_count: 40,
            log_file_blake3: "ab".repeat(32),
            last_event_hash: "cd".repeat(32),
            previous_digest_hash: None,
            sealed_at: "2026-11-30T00:00:00Z".into(),
        }
    }

    #[test]
    fn encoding_is_the_documented_one() {
        let key = Key256::from_bytes([1; 32]);
        let (bytes, hash) = body().encode(&key);
        let text = std::str::from_utf8(&bytes).unwrap();
        let canonical = format!(
            "{{\"digestVersion\":1,\"logFile\":\"20261129-000000000001.jsonl\",\"firstSeq\":1,\"lastSeq\":40,\"eventCount\":40,\"logFileBlake3\":\"{}\",\"lastEventHash\":\"{}\",\"previousDigestHash\":null,\"sealedAt\":\"2026-11-30T00:00:00Z\"}}",
            "ab".repeat(32),
            "cd".repeat(32)
        );
        let mut h = blake3::Hasher::new_keyed(key.expose());
        h.update(b"cryptvol audit digest v1");
        h.update(canonical.as_bytes());
        assert_eq!(*h.finalize().as_bytes(), hash);
        assert!(text.starts_with(&canonical[..canonical.len() - 1]));
        assert!(text.ends_with(&format!(",\"digestHash\":\"{}\"}}\n", hex::encode(hash))));
        let back = Digest::parse(&bytes).unwrap();
        assert_eq!(back.body, body());
        assert!(back.is_authentic(&key));
        assert!(!back.is_authentic(&Key256::from_bytes([2; 32])));
    }

    #[test]
    fn pretty_printed_digest_still_verifies_and_edits_do_not() {
        let key = Key256::from_bytes([1; 32]);
        let (bytes, _) = body().encode(&key);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let pretty = serde_json::to_vec_pretty(&v).unwrap();
        assert!(Digest::parse(&pretty).unwrap().is_authentic(&key));
        let edited = String::from_utf8(bytes)
            .unwrap()
            .replace("\"lastSeq\":40", "\"lastSeq\":39");
        assert!(!Digest::parse(edited.as_bytes()).unwrap().is_authentic(&key));
    }

    #[test]
    fn unknown_version_and_fields_are_refused() {
        let key = Key256::from_bytes([1; 32]);
        let (bytes, _) = body().encode(&key);
        let text = String::from_utf8(bytes).unwrap();
        let v2 = text.replace("\"digestVersion\":1", "\"digestVersion\":2");
        assert!(
            Digest::parse(v2.as_bytes())
                .unwrap_err()
                .contains("version 1 only")
        );
        let extra = text.replace("{\"digestVersion\"", "{\"x\":1,\"digestVersion\"");
        let e = Digest::parse(extra.as_bytes()).map(|_| ()).unwrap_err();
        assert!(e.contains("unknown field `x`"), "{e}");
        let e = Digest::parse(b"[]").map(|_| ()).unwrap_err();
        assert_eq!(e, "it is not a JSON object");
    }
}
