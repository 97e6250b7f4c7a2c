//! One line of the log: the caller's event object with the chain member
//! `"cryptvolChain":{"seq":N,"prev":"<hex>","hash":"<hex>"}` (then `,"keyEpoch":E` when the
//! line is under a chain key after a root-key rotation, E ≥ 1) appended as its last member,
//! and the keyed hash that links it to the event before it (format in the parent module).
//!
//! This file only turns bytes into lines and back; it does no I/O and never parses the
//! event itself (the hash covers the exact bytes, whatever JSON they hold).

use crate::crypto::Key256;

/// A 32-byte BLAKE3 output.
pub(super) type Hash = [u8; 32];

/// The `prev` of event 1.
pub(super) const GENESIS: Hash = [0; 32];

/// Domain separation for event hashes under the region's first chain key (epoch 0)...
const EVENT_CONTEXT: &[u8] = b"cryptvol audit event v1";
/// ...and under a successor (epoch ≥ 1), whose hash also covers the epoch.
const EVENT_CONTEXT_EPOCH: &[u8] = b"cryptvol audit event v2";

/// What precedes the chain member in a non-empty object. A `"` inside a JSON string is always
/// escaped, so these bytes only occur where a member named `cryptvolChain` starts, and since
/// ours is the last member, the last occurrence is ours.
const MEMBER_AFTER_COMMA: &[u8] = b",\"cryptvolChain\":{";
/// The line of an empty event `{}` has no comma before the member.
const MEMBER_ALONE: &[u8] = b"{\"cryptvolChain\":{";

/// Epoch 0: `hash = keyed_blake3(mac_key, "cryptvol audit event v1" || seq u64 LE || prev ||
/// event)`; epoch E ≥ 1: `keyed_blake3(mac_key_E, "cryptvol audit event v2" || E u32 LE ||
/// seq u64 LE || prev || event)`, where `event = head || "}"` (`head` is the event's compact
/// JSON without its closing brace).
pub(super) fn event_hash(key: &Key256, epoch: u32, seq: u64, prev: &Hash, head: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new_keyed(key.expose());
    if epoch == 0 {
        h.update(EVENT_CONTEXT);
    } else {
        h.update(EVENT_CONTEXT_EPOCH);
        h.update(&epoch.to_le_bytes());
    }
    h.update(&seq.to_le_bytes());
    h.update(prev);
    h.update(head);
    h.update(b"}");
    *h.finalize().as_bytes()
}

/// Turns `buf`, the compact JSON of an event object (so it ends with `}`), into its log line
/// under chain key `epoch` (`key`), ending in `\n`; returns the event's hash.
pub(super) fn make_line(
    buf: &mut Vec<u8>,
    key: &Key256,
    epoch: u32,
    seq: u64,
    prev: &Hash,
) -> Hash {
    debug_assert_eq!(buf.last(), Some(&b'}'));
    buf.pop();
    let hash = event_hash(key, epoch, seq, prev, buf);
    if buf.len() > 1 {
        buf.push(b',');
    }
    // Written straight into `buf` (no String per number or hash: this is every KMS call).
    let mut hex = [0u8; 64];
    buf.extend_from_slice(b"\"cryptvolChain\":{\"seq\":");
    push_decimal(buf, seq);
    buf.extend_from_slice(b",\"prev\":\"");
    hex::encode_to_slice(prev, &mut hex).expect("64 hex digits for 32 bytes");
    buf.extend_from_slice(&hex);
    buf.extend_from_slice(b"\",\"hash\":\"");
    hex::encode_to_slice(hash, &mut hex).expect("64 hex digits for 32 bytes");
    buf.extend_from_slice(&hex);
    buf.push(b'"');
    if epoch != 0 {
        buf.extend_from_slice(b",\"keyEpoch\":");
        push_decimal(buf, epoch.into());
    }
    buf.extend_from_slice(b"}}\n");
    hash
}

/// Appends `n` in decimal (as `to_string` writes it).
fn push_decimal(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// A line split into the event and its chain member (not yet checked against the key).
#[derive(Debug)]
pub(super) struct Line<'a> {
    /// The event's compact JSON without its closing brace.
    pub head: &'a [u8],
    pub seq: u64,
    pub prev: Hash,
    pub hash: Hash,
    /// The chain key's epoch (0 when the member has no `keyEpoch`).
    pub epoch: u32,
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
    const BAD: &str = "its cryptvolChain member is not {\"seq\":N,\"prev\":\"<64 hex>\",\"hash\":\"<64 hex>\"} (with \",\"keyEpoch\":E\" after a root-key rotation)";
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
    let rest = &rest[64..];
    let epoch = if rest == b"\"}}" {
        0
    } else {
        // One spelling only: no leading zero, and no `"keyEpoch":0` (epoch 0 has no member).
        let digits = rest
            .strip_prefix(b"\",\"keyEpoch\":")
            .and_then(|r| r.strip_suffix(b"}}"))
            .filter(|d| !d.is_empty() && d[0] != b'0' && d.iter().all(u8::is_ascii_digit))
            .ok_or(BAD)?;
        std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
            .ok_or(BAD)?
    };
    Ok(Line {
        head,
        seq,
        prev,
        hash,
        epoch,
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
        line_at(event, 0, seq, prev)
    }

    fn line_at(event: &serde_json::Value, epoch: u32, seq: u64, prev: &Hash) -> (Vec<u8>, Hash) {
        let mut buf = serde_json::to_vec(event).unwrap();
        let h = make_line(&mut buf, &key(), epoch, seq, prev);
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
        assert_eq!(event_hash(&key(), 0, 3, &[9; 32], l.head), h);
        assert_eq!(l.epoch, 0);
        assert!(!line.windows(8).any(|w| w == b"keyEpoch"));
        assert_eq!(l.event_id().as_deref(), Some("e1"));
    }

    /// A line under a successor key names its epoch, and its hash covers it: the same
    /// event, seq and prev under the same key hash differently at another epoch.
    #[test]
    fn epoch_lines_round_trip_and_bind_their_epoch() {
        let ev = serde_json::json!({"eventName": "Decrypt"});
        let (line, h) = line_at(&ev, 7, 4, &[1; 32]);
        let body = &line[..line.len() - 1];
        assert!(
            body.ends_with(b"\",\"keyEpoch\":7}}"),
            "{}",
            String::from_utf8_lossy(body)
        );
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["cryptvolChain"]["keyEpoch"], 7);
        let l = parse_line(body).unwrap();
        assert_eq!((l.epoch, l.seq, l.hash), (7, 4, h));
        assert_ne!(event_hash(&key(), 8, 4, &[1; 32], l.head), h);
        assert_ne!(event_hash(&key(), 0, 4, &[1; 32], l.head), h);
        let text = String::from_utf8(body.to_vec()).unwrap();
        for bad in [":07}}", ":0}}", ":}}", ":7x}}", ":99999999999}}"] {
            let t = text.replace(":7}}", bad);
            assert!(parse_line(t.as_bytes()).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn decimals_are_written_as_to_string_writes_them() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            123_456_789,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut buf = b"x".to_vec();
            push_decimal(&mut buf, n);
            assert_eq!(buf, format!("x{n}").into_bytes());
        }
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
            epoch in proptest::prop_oneof![proptest::strategy::Just(0u32), 1u32..=u32::MAX],
        ) {
            let ev = serde_json::to_value(&members).unwrap();
            let (line, h) = line_at(&ev, epoch, seq, &prev);
            proptest::prop_assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            let l = parse_line(&line[..line.len() - 1]).unwrap();
            proptest::prop_assert_eq!((l.seq, l.prev, l.hash, l.epoch), (seq, prev, h, epoch));
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
