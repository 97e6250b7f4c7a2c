//! Names and units of the volume layer: volume and snapshot ids, pool slot numbers, and
//! human sizes (`10G`).

use std::fmt;

use super::error::VolumeError;

/// 4096 bytes: one XTS data unit, the FUSE file's block size, the loop device's sector.
pub const BLOCK_SIZE: u64 = 4096;

fn is_id(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|h| {
        h.len() == 17
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn random_hex17() -> String {
    let b: [u8; 9] = crate::crypto::random::array();
    let mut digits = hex::encode(b);
    digits.truncate(17);
    digits
}

/// An EBS-style id: a prefix followed by 17 lowercase hex digits.
macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn random() -> Self {
                $name(format!("{}{}", Self::PREFIX, random_hex17()))
            }

            pub fn parse(s: &str) -> Option<Self> {
                is_id(s, Self::PREFIX).then(|| $name(s.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = VolumeError;
            fn try_from(s: String) -> Result<Self, VolumeError> {
                $name::parse(&s).ok_or(VolumeError::InvalidArgument {
                    what: $what.into(),
                    message: format!("'{s}' is not {} followed by 17 hex digits", $prefix),
                })
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// `vol-` followed by 17 hex digits, as EBS.
    VolumeId, "vol-", "volume id"
);
prefixed_id!(
    /// `snap-` followed by 17 hex digits, as EBS.
    SnapshotId, "snap-", "snapshot id"
);

/// Index of a chunk-sized slot in a pool data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotNo(pub u64);

/// Parses `10G`, `512M`, `1T`, `64K`, `4096`, also with `iB`/`B` (`10GiB`): binary units.
pub fn parse_size(s: &str) -> Result<u64, VolumeError> {
    let bad = || VolumeError::InvalidArgument {
        what: "size".into(),
        message: format!("'{s}' is not a size like 10G, 512M or 1T"),
    };
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        Some('T' | 't') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: u64 = num.trim().parse().map_err(|_| bad())?;
    n.checked_mul(mult).ok_or_else(bad)
}

/// `1.5 GiB`-style rendering for humans.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_ids() {
        let s = SnapshotId::random();
        assert_eq!(s.as_str().len(), 22);
        assert!(SnapshotId::parse(s.as_str()).is_some());
        assert!(SnapshotId::parse("vol-0123456789abcdef0").is_none());
    }

    #[test]
    fn ids() {
        let v = VolumeId::random();
        assert_eq!(v.as_str().len(), 21);
        assert_eq!(VolumeId::parse(v.as_str()), Some(v.clone()));
        assert!(VolumeId::parse("vol-123").is_none());
        assert!(VolumeId::parse("vol-0123456789ABCDEF0").is_none());
        assert_ne!(VolumeId::random(), v);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        for bad in ["ten", "99999999999T"] {
            assert!(
                matches!(
                    parse_size(bad),
                    Err(VolumeError::InvalidArgument { what, .. }) if what == "size"
                ),
                "{bad}"
            );
        }
        assert_eq!(format_size(1536 << 20), "1.5 GiB");
    }
}
