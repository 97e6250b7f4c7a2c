//! Format versions of the files cryptvol writes (docs/formats.md). A reader that meets a
//! version newer than the ones it knows refuses the file with "upgrade cryptvol" (its own
//! error and exit code), never "damaged": the file is fine, this cryptvol is too old for it.
//! Such a reader looks at nothing past the version: a newer format may change all of it.

/// The versions a reader whose newest version is `newest` reads: "1" or "1–N".
pub fn readable(newest: u64) -> String {
    if newest <= 1 {
        "1".to_string()
    } else {
        format!("1–{newest}")
    }
}

/// The message of a file or record written by a newer cryptvol.
pub fn newer_message(what: &str, found: u64, newest: u64) -> String {
    format!(
        "{what} was written by a newer cryptvol (format version {found}; this one reads {}): upgrade cryptvol",
        readable(newest)
    )
}

/// The numeric member `member` (`"format"`) of a JSON object, read before the file is
/// parsed strictly: a newer version may add fields that the strict parser refuses, and must
/// still be told apart from damage. None when there is no such number (the strict parse
/// then says what is wrong).
pub fn json_version(bytes: &[u8], member: &str) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()?
        .get(member)?
        .as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_json_versions() {
        assert_eq!(
            newer_message("volume vol-0123456789abcdef0", 3, 2),
            "volume vol-0123456789abcdef0 was written by a newer cryptvol (format version 3; this one reads 1–2): upgrade cryptvol"
        );
        assert_eq!(readable(1), "1");
        assert_eq!(
            json_version(br#"{"format": 7, "new": []}"#, "format"),
            Some(7)
        );
        assert_eq!(json_version(br#"{"format": "7"}"#, "format"), None);
        assert_eq!(json_version(b"not json", "format"), None);
    }
}
