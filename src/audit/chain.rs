//! One line of the log: the caller's event object with the chain member
//! `"cryptvolChain":{"seq":N,"prev":"<hex>","hash":"<hex>"}` appended as its last member,
//! and the keyed hash that links it to the event before it (format in the parent module).
//!
//! This file only turns bytes into lines and back; it does no I/O and never parses the
//! event itself (the hash covers the exact bytes, whatever JSON they hold).

use crate::crypto::Key256;

/// A 32-byte BLAKE3 output.
pub(super) type Hash = [u8; 32];

/// The `prev` of event 1.
pub(super) const GENESIS: Hash = [0; 32];

/// Domain separation for event hashes.
const EVENT_CONTEXT: &[u8] = b"cryptvol audit event v1";

/// What precedes the chain member in a non-empty object. A `"` inside a JSON string is always
/// escaped, so these bytes only occur where a member named `cryptvolChain` starts, and since
/// ours is the last member, the last occurrence is ours.
const MEMBER_AFTER_COMMA: &[u8] = b",\"cryptvolChain\":{";
/// The line of an empty event `{}` has no comma before the member.
const MEMBER_ALONE: &[u8] = b"{\"cryptvolChain\":{";

/// `hash = keyed_blake3(mac_key, "cryptvol audit event v1" || seq u64 LE || prev || event)`,
/// where `event = head || "}"` (`head` is the event's compact JSON without its closing brace).
pub(super) fn event_hash(key: &Key256, seq: u64, prev: &Hash, head: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new_keyed(key.expose());
    h.update(EVENT_CONTEXT);
    h.update(&seq.to_le_bytes());
    h.update(prev);
    h.update(head);
    h.update(b"}");
    *h.finalize().as_bytes()
}

/// Turns `buf`, the compact JSON of an event object (so it ends with `}`), into its log line
/// ending in `\n`; returns the event's hash.
pub(super) fn make_line(buf: &mut Vec<u8>, key: &Key256, seq: u64, prev: &Hash) -> Hash {
    debug_assert_eq!(buf.last(), Some(&b'}'));
    buf.pop();
    let hash = event_hash(key, seq, prev, buf);
    if buf.len() > 1 {
        buf.push(b',');
    }
    buf.extend_from_slice(b"\"cryptvolChain\":{\"seq\":");
    buf.extend_from_slice(seq.to_string().as_bytes());
    buf.extend_from_slice(b",\"prev\":\"");
    buf.extend_from_slice(hex::encode(prev).as_bytes());
    buf.extend_from_slice(b"\",\"hash\":\"");
    buf.extend_from_slice(hex::encode(hash).as_bytes());
    buf.extend_from_slice(b"\"}}\n");
    hash
}

/// A line split into the event and its chain member (not yet checked against the key).
#[derive(Debug)]
pub(super) struct Line<'a> {
    /// The event's compact JSON without its closing brace.
    pub head: &'a [u8],
    pub seq: u64,
    pub prev: Hash,
    pub hash: Hash,
}

impl Line<'_> {
    /// The event's JSON, as it was before the chain member was added.
    pub fn event_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.head.len() + 1);
        v.extend_from_slice(self.head);
        v.push(b'}');
        v
    }

    /// The event's CloudTrail `eventID`, if the event parses and has one (for messages).
    pub fn event_id(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.event_bytes()).ok()?;
        v.get("eventID")?.as_str().map(str::to_owned)
    }
}

/// Splits one line (without its `\n`); the error says what is wrong with it.
pub(super) fn parse_line(line: &[u8]) -> Result<Line<'_>, &'static str> {
    let (head, member) = match rfind(line, MEMBER_AFTER_COMMA) {
        Some(i) => (&line[..i], &line[i + MEMBER_AFTER_COMMA.len()..]),
        None if line.starts_with(MEMBER_ALONE) => (&line[..1], &line[MEMBER_ALONE.len()..]),
        None => return Err("it has no cryptvolChain member"),
    };
    if head.first() != Some(&b'{') {
        return Err("it is not a JSON object");
    }
    const BAD: &str =
        "its cryptvolChain member is not {\"seq\":N,\"prev\":\"<64 hex>\",\"hash\":\"<64 hex>\"}";
    let rest = member.strip_prefix(b"\"seq\":").ok_or(BAD)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let seq = std::str::from_utf8(&rest[..digits])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or(BAD)?;
    let rest = rest[digits..].strip_prefix(b",\"prev\":\"").ok_or(BAD)?;
    let prev = parse_hex(rest.get(..64).ok_or(BAD)?).ok_or(BAD)?;
    let rest = rest[64..].strip_prefix(b"\",\"hash\":\"").ok_or(BAD)?;
    let hash = parse_hex(rest.get(..64).ok_or(BAD)?).ok_or(BAD)?;
    if &rest[64..] != b"\"}}" {
        return Err(BAD);
    }
    Ok(Line {
        head,
        seq,
        prev,
        hash,
    })
}

/// Start of the last occurrence of `needle`; the chain member sits near the end, so scanning
/// backwards finds it after a couple of hundred bytes whatever the event's size.
fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// 64 lowercase hex digits to a hash; `None` for anything else. Uppercase is refused: the
/// files hold one spelling of each hash (`hex::encode`'s), and the chain covers those bytes.
pub(super) fn parse_hex(text: &[u8]) -> Option<Hash> {
    if text.iter().any(u8::is_ascii_uppercase) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key256 {
        Key256::from_bytes([7; 32])
    }

    fn line_of(event: &serde_json::Value, seq: u64, prev: &Hash) -> (Vec<u8>, Hash) {
        let mut buf = serde_json::to_vec(event).unwrap();
        let h = make_line(&mut buf, &key(), seq, prev);
        (buf, h)
    }

    #[test]
    fn line_round_trips_and_stays_json() {
        let ev = serde_json::json!({"eventName": "Encrypt", "eventID": "e1"});
        let (line, h) = line_of(&ev, 3, &[9; 32]);
        assert_eq!(line.last(), Some(&b'\n'));
        let body = &line[..line.len() - 1];
        let parsed: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(parsed["cryptvolChain"]["seq"], 3);
        let l = parse_line(body).unwrap();
        assert_eq!((l.seq, l.prev, l.hash), (3, [9; 32], h));
        assert_eq!(l.event_bytes(), serde_json::to_vec(&ev).unwrap());
        assert_eq!(event_hash(&key(), 3, &[9; 32], l.head), h);
        assert_eq!(l.event_id().as_deref(), Some("e1"));
    }

    #[test]
    fn empty_object_and_inner_chain_key() {
        let (line, _) = line_of(&serde_json::json!({}), 1, &GENESIS);
        let l = parse_line(&line[..line.len() - 1]).unwrap();
        assert_eq!(l.event_bytes(), b"{}");
        let ev = serde_json::json!({"ctx": {"cryptvolChain": {"seq": 99}}, "z": 1});
        let (line, _) = line_of(&ev, 2, &GENESIS);
        let l = parse_line(&line[..line.len() - 1]).unwrap();
        assert_eq!(l.seq, 2);
        assert_eq!(l.event_bytes(), serde_json::to_vec(&ev).unwrap());
    }

    #[test]
    fn damaged_members_are_refused() {
        let (line, _) = line_of(&serde_json::json!({"a": 1}), 5, &GENESIS);
        let body = &line[..line.len() - 1];
        for cut in [1, 10, 70, 140] {
            let e = parse_line(&body[..body.len() - cut])
                .map(|_| ())
                .unwrap_err();
            assert!(e.contains("cryptvolChain member is not"), "cut {cut}: {e}");
        }
        for line in [&b"[1,2]"[..], b""] {
            let e = parse_line(line).map(|_| ()).unwrap_err();
            assert_eq!(e, "it has no cryptvolChain member");
        }
    }

    proptest::proptest! {
        /// Whatever the keys and strings (quotes, braces, a nested `cryptvolChain`), the line
        /// gives back the exact event bytes, seq, prev and hash.
        #[test]
        fn any_object_round_trips(
            members in proptest::collection::btree_map(
                "(cryptvolChain|[a-z\\\\\",:{}]{0,12})",
                "[ -~\\n]{0,20}",
                0..6,
            ),
            seq in 1u64..u64::MAX,
            prev in proptest::array::uniform32(proptest::num::u8::ANY),
        ) {
            let ev = serde_json::to_value(&members).unwrap();
            let (line, h) = line_of(&ev, seq, &prev);
            proptest::prop_assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            let l = parse_line(&line[..line.len() - 1]).unwrap();
            proptest::prop_assert_eq!((l.seq, l.prev, l.hash), (seq, prev, h));
            proptest::prop_assert_eq!(l.event_bytes(), serde_json::to_vec(&ev).unwrap());
        }
    }

    #[test]
    fn hex_round_trip() {
        let h: Hash = std::array::from_fn(|i| i as u8 * 8);
        assert_eq!(parse_hex(hex::encode(h).as_bytes()), Some(h));
        assert_eq!(parse_hex(hex::encode_upper(h).as_bytes()), None);
        assert_eq!(parse_hex(hex::encode(&h[..31]).as_bytes()), None);
    }
}
