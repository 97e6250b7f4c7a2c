//! The framing shared by the volume header and the snapshot record: an 8-byte magic, a
//! u16 format version, fixed fields, `u16 length ‖ bytes` fields, and a blake3 checksum of
//! everything before it (docs/formats.md). Corruption of any byte is detected.

use super::error::{Result, VolumeError};

pub const CHECKSUM_LEN: usize = 32;

/// Starts a record: magic and version.
pub fn begin(magic: &[u8; 8], version: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out
}

/// Appends a `u16 length ‖ bytes` field.
pub fn push_field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Appends the checksum; the record is complete.
pub fn seal(mut out: Vec<u8>) -> Vec<u8> {
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

/// Reads a record's fields after checking its checksum, magic and version.
pub struct Reader<'a> {
    body: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// `fixed`: bytes of fixed fields after magic and version, readable with `fixed()`.
    pub fn open(
        bytes: &'a [u8],
        magic: &[u8; 8],
        version: u16,
        fixed: usize,
        what: &'static str,
    ) -> Result<Reader<'a>> {
        let bad = |d: &str| corrupt(what, d);
        if bytes.len() < 10 + fixed + CHECKSUM_LEN {
            return Err(bad("too short"));
        }
        // Magic and version before the checksum: a newer format may frame and checksum
        // its records differently, and must be told apart from damage.
        if &bytes[..8] != magic {
            return Err(bad("bad magic"));
        }
        let v = u16::from_le_bytes([bytes[8], bytes[9]]);
        if v > version {
            return Err(VolumeError::NewerFormat {
                what: what.to_string(),
                found: v.into(),
                newest: version.into(),
            });
        }
        if v != version {
            return Err(bad(&format!("format {v} is not one cryptvol ever wrote")));
        }
        let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if blake3::hash(body).as_bytes() != sum {
            return Err(bad("checksum mismatch"));
        }
        Ok(Reader {
            body,
            pos: 10,
            what,
        })
    }

    /// The next `n` bytes of fixed fields.
    pub fn fixed(&mut self, n: usize) -> Result<&'a [u8]> {
        let f = self
            .body
            .get(self.pos..self.pos + n)
            .ok_or_else(|| corrupt(self.what, "truncated"))?;
        self.pos += n;
        Ok(f)
    }

    /// The next `u16 length ‖ bytes` field.
    pub fn field(&mut self) -> Result<&'a [u8]> {
        let l = self.fixed(2)?;
        let len = u16::from_le_bytes([l[0], l[1]]) as usize;
        self.fixed(len)
    }

    pub fn text(&mut self) -> Result<String> {
        let what = self.what;
        String::from_utf8(self.field()?.to_vec()).map_err(|_| corrupt(what, "non-UTF-8 text"))
    }

    /// Every byte must have been read.
    pub fn finish(self) -> Result<()> {
        if self.pos != self.body.len() {
            return Err(corrupt(self.what, "trailing bytes"));
        }
        Ok(())
    }

    pub fn corrupt(&self, detail: &str) -> VolumeError {
        corrupt(self.what, detail)
    }
}

/// Names the object whose record did not decode (`the volume header of vol-…`), where the
/// caller knows it (the record's table key).
pub fn named(e: VolumeError, object: &str) -> VolumeError {
    match e {
        VolumeError::Corrupt { what, detail } => VolumeError::Corrupt {
            what: format!("the {what} of {object}"),
            detail,
        },
        VolumeError::NewerFormat {
            what,
            found,
            newest,
        } => VolumeError::NewerFormat {
            what: format!("the {what} of {object}"),
            found,
            newest,
        },
        other => other,
    }
}

fn corrupt(what: &str, detail: &str) -> VolumeError {
    VolumeError::Corrupt {
        what: what.to_string(),
        detail: detail.to_string(),
    }
}

/// Serde for a type with a checksummed binary form (a volume header, a snapshot record):
/// it crosses the daemon's control socket as base64 of exactly that form, and a value
/// that does not decode is a deserialization error, never a default.
#[macro_export]
macro_rules! serde_as_binary_record {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&$crate::aws::b64::encode(&self.encode()))
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                let bytes = $crate::aws::b64::decode(&s).map_err(serde::de::Error::custom)?;
                <$t>::decode(&bytes).map_err(serde::de::Error::custom)
            }
        }
    };
}
