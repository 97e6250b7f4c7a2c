//! The volume header: everything needed to open a volume, kept in the pool metadata and
//! checksummed with blake3. Byte layout in docs/formats.md, "Volume header"; this module
//! is its only reader and writer.

use super::error::{Result, VolumeError};
use super::ids::{BLOCK_SIZE, VolumeId};
use super::record;
use crate::aws::Region;

pub const MAGIC: [u8; 8] = *b"CVVOLHDR";
/// Six fields: a KMS key is always this data dir's KMS's.
pub const FORMAT_V1: u16 = 1;
/// Seven: the seventh is the URL of the remote KMS of the key (empty: this data dir's).
pub const FORMAT_V2: u16 = 2;
/// Eight: the eighth is the key check of a KMS data key (32 bytes; empty: not checked).
pub const FORMAT_V3: u16 = 3;
/// Format 3 with a flags byte at offset 12: bit 0, an authenticated volume
/// (`volume::integrity`). Written only when a flag is set, so older readers of every other
/// volume are not turned away.
pub const FORMAT_V4: u16 = 4;
const FLAG_INTEGRITY: u8 = 1;
const FIXED_LEN: usize = 32;

/// Smallest and largest chunk: 64 KiB .. 64 MiB (powers of two).
pub const MIN_CHUNK_SHIFT: u8 = 16;
pub const MAX_CHUNK_SHIFT: u8 = 26;
pub const DEFAULT_CHUNK_SHIFT: u8 = 20;
/// Largest volume: 64 TiB.
pub const MAX_SIZE: u64 = 64 << 40;

/// How the volume's data key is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A data key from the KMS, wrapped under `key_arn` (`wrapped` is the KMS blob), by
    /// the remote KMS at `endpoint`, or by this data dir's KMS (`None`). `check`: the key
    /// check of the data key (`volume::key_check`), `None` in headers made before checks.
    Kms {
        key_arn: String,
        wrapped: Vec<u8>,
        endpoint: Option<String>,
        check: Option<[u8; 32]>,
    },
    /// A key the user supplies at every attach; only a salted verifier is kept.
    Customer { salt: [u8; 16], verifier: [u8; 32] },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeHeader {
    pub id: VolumeId,
    /// The id the data key was made for (`cryptvol:lineage` context): the volume's own id,
    /// or the id of the volume or snapshot it was restored from.
    pub lineage: String,
    pub region: Region,
    pub name: String,
    pub size: u64,
    pub chunk_shift: u8,
    pub created: i64,
    pub key: KeySource,
    /// Every block is authenticated (`volume create --integrity`).
    pub integrity: bool,
}

/// A volume name: up to 128 characters, no `/` or newline, not an id lookalike.
pub fn check_name(name: &str) -> Result<()> {
    if name.len() > 128
        || name.starts_with("vol-")
        || name.starts_with("snap-")
        || name.contains(['/', '\n'])
    {
        return Err(VolumeError::invalid(
            "name",
            format!(
                "'{name}': at most 128 characters, no '/', and not starting with vol- or snap-"
            ),
        ));
    }
    Ok(())
}

impl VolumeHeader {
    pub fn chunk_size(&self) -> u64 {
        1 << self.chunk_shift
    }

    pub fn validate_size(size: u64) -> Result<()> {
        if size == 0 || !size.is_multiple_of(BLOCK_SIZE) || size > MAX_SIZE {
            return Err(VolumeError::invalid(
                "size",
                format!("{size} bytes: a volume is a positive multiple of 4 KiB, at most 64 TiB"),
            ));
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        let flags = if self.integrity { FLAG_INTEGRITY } else { 0 };
        let version = if flags != 0 { FORMAT_V4 } else { FORMAT_V3 };
        let mut out = record::begin(&MAGIC, version);
        out.push(match self.key {
            KeySource::Kms { .. } => 1,
            KeySource::Customer { .. } => 2,
        });
        out.push(self.chunk_shift);
        out.extend_from_slice(&[flags, 0, 0, 0]);
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.created.to_le_bytes());
        debug_assert_eq!(out.len(), FIXED_LEN);
        record::push_field(&mut out, self.id.as_str().as_bytes());
        record::push_field(&mut out, self.lineage.as_bytes());
        record::push_field(&mut out, self.region.as_str().as_bytes());
        record::push_field(&mut out, self.name.as_bytes());
        match &self.key {
            KeySource::Kms {
                key_arn,
                wrapped,
                endpoint,
                check,
            } => {
                record::push_field(&mut out, key_arn.as_bytes());
                record::push_field(&mut out, wrapped);
                record::push_field(&mut out, endpoint.as_deref().unwrap_or("").as_bytes());
                record::push_field(&mut out, check.as_ref().map_or(&[][..], |c| &c[..]));
            }
            KeySource::Customer { salt, verifier } => {
                record::push_field(&mut out, b"");
                let mut sv = [0u8; 48];
                sv[..16].copy_from_slice(salt);
                sv[16..].copy_from_slice(verifier);
                record::push_field(&mut out, &sv);
                record::push_field(&mut out, b"");
                record::push_field(&mut out, b"");
            }
        }
        record::seal(out)
    }

    /// Reads format 3, format 2 (no key checks) and format 1 (whose KMS keys are also all
    /// this data dir's KMS's).
    pub fn decode(bytes: &[u8]) -> Result<VolumeHeader> {
        let version = match bytes.get(8..10) {
            Some(&[lo, hi]) if u16::from_le_bytes([lo, hi]) == FORMAT_V1 => FORMAT_V1,
            Some(&[lo, hi]) if u16::from_le_bytes([lo, hi]) == FORMAT_V2 => FORMAT_V2,
            Some(&[lo, hi]) if u16::from_le_bytes([lo, hi]) == FORMAT_V3 => FORMAT_V3,
            _ => FORMAT_V4,
        };
        let mut r = record::Reader::open(bytes, &MAGIC, version, FIXED_LEN - 10, "volume header")?;
        let fixed = r.fixed(FIXED_LEN - 10)?;
        let (kind, chunk_shift) = (fixed[0], fixed[1]);
        let flags = if version == FORMAT_V4 { fixed[2] } else { 0 };
        let reserved_from = if version == FORMAT_V4 { 3 } else { 2 };
        if fixed[reserved_from..6].iter().any(|&b| b != 0) || flags & !FLAG_INTEGRITY != 0 {
            return Err(r.corrupt("reserved bytes 12..16 are not zero"));
        }
        if !(MIN_CHUNK_SHIFT..=MAX_CHUNK_SHIFT).contains(&chunk_shift) {
            return Err(r.corrupt("chunk size out of range"));
        }
        let size = u64::from_le_bytes(fixed[6..14].try_into().expect("8"));
        let created = i64::from_le_bytes(fixed[14..22].try_into().expect("8"));
        let id = VolumeId::parse(&r.text()?).ok_or_else(|| r.corrupt("bad volume id"))?;
        let lineage = r.text()?;
        let region = Region::parse(&r.text()?).map_err(|_| r.corrupt("bad region"))?;
        let name = r.text()?;
        let arn = r.text()?;
        let material = r.field()?.to_vec();
        let endpoint = match version {
            FORMAT_V1 => String::new(),
            _ => r.text()?,
        };
        let check = match version {
            FORMAT_V1 | FORMAT_V2 => None,
            _ => match r.field()? {
                [] => None,
                c if c.len() == 32 => Some(<[u8; 32]>::try_from(c).expect("32")),
                _ => return Err(r.corrupt("a key check that is not 32 bytes")),
            },
        };
        let key = match kind {
            1 => KeySource::Kms {
                key_arn: arn,
                wrapped: material,
                endpoint: Some(endpoint).filter(|e| !e.is_empty()),
                check,
            },
            2 if !endpoint.is_empty() => {
                return Err(r.corrupt("a customer key with a KMS endpoint"));
            }
            2 if check.is_some() => {
                return Err(r.corrupt("a customer key with a KMS key check"));
            }
            2 if material.len() == 48 => KeySource::Customer {
                salt: material[..16].try_into().expect("16"),
                verifier: material[16..].try_into().expect("32"),
            },
            _ => return Err(r.corrupt("unknown key kind")),
        };
        VolumeHeader::validate_size(size).map_err(|_| r.corrupt("size out of range"))?;
        r.finish()?;
        Ok(VolumeHeader {
            id,
            lineage,
            region,
            name,
            size,
            chunk_shift,
            created,
            key,
            integrity: flags & FLAG_INTEGRITY != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> VolumeHeader {
        VolumeHeader {
            id: VolumeId::parse("vol-0123456789abcdef0").unwrap(),
            lineage: "vol-0123456789abcdef0".into(),
            region: Region::parse("local-1").unwrap(),
            name: "db".into(),
            size: 10 << 30,
            chunk_shift: DEFAULT_CHUNK_SHIFT,
            created: 1_795_000_000,
            key: KeySource::Kms {
                key_arn:
                    "arn:aws:kms:local-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
                        .into(),
                wrapped: vec![7; 140],
                endpoint: None,
                check: Some([9; 32]),
            },
            integrity: false,
        }
    }

    /// [`sample`] as a header made before key checks.
    fn unchecked() -> VolumeHeader {
        let mut h = sample();
        if let KeySource::Kms { check, .. } = &mut h.key {
            *check = None;
        }
        h
    }

    #[test]
    fn roundtrip_and_worked_size() {
        let h = sample();
        let b = h.encode();
        // docs/formats.md: 32 fixed + (2+21) id + (2+21) lineage + (2+7) region + (2+2) name
        // + (2+73) ARN + (2+140) wrapped key + (2+0) endpoint + (2+32) key check + 32
        // checksum = 376 bytes; 344 without a key check (an empty eighth field).
        assert_eq!(b.len(), 376);
        assert_eq!(VolumeHeader::decode(&b).unwrap(), h);
        assert_eq!(unchecked().encode().len(), 344);
        assert_eq!(
            VolumeHeader::decode(&unchecked().encode()).unwrap(),
            unchecked()
        );
        let remote = VolumeHeader {
            key: KeySource::Kms {
                key_arn: "arn:aws:kms:us-east-1:123456789012:key/k".into(),
                wrapped: vec![1; 200],
                endpoint: Some("https://kms.us-east-1.amazonaws.com/".into()),
                check: Some([3; 32]),
            },
            ..h.clone()
        };
        assert_eq!(VolumeHeader::decode(&remote.encode()).unwrap(), remote);
        let c = VolumeHeader {
            key: KeySource::Customer {
                salt: [1; 16],
                verifier: [2; 32],
            },
            ..h
        };
        assert_eq!(VolumeHeader::decode(&c.encode()).unwrap(), c);
    }

    /// The exact bytes of docs/formats.md, "Volume header", for a customer-key volume: the
    /// body as hex, then blake3 of it.
    #[test]
    fn exact_bytes() {
        let h = VolumeHeader {
            size: 1 << 30,
            chunk_shift: 16,
            key: KeySource::Customer {
                salt: [1; 16],
                verifier: [2; 32],
            },
            ..sample()
        };
        let body: String = [
            "4356564f4c48445203000210000000000000004000000000c086fd6a00000000",
            "1500766f6c2d30313233343536373839616263646566301500766f6c2d303132",
            "333435363738396162636465663007006c6f63616c2d31020064620000300001",
            "0101010101010101010101010101010202020202020202020202020202020202",
            "02020202020202020202020202020200000000",
        ]
        .concat();
        let b = h.encode();
        let hex: String = b[..b.len() - 32]
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect();
        assert_eq!(hex, body);
        assert_eq!(
            &b[b.len() - 32..],
            blake3::hash(&b[..b.len() - 32]).as_bytes()
        );
    }

    /// Reserved bytes must be zero even under a matching checksum; a newer version says
    /// "upgrade", before the checksum is looked at (a newer format may checksum otherwise).
    #[test]
    fn reserved_bytes_and_newer_versions() {
        let reseal = |mut b: Vec<u8>| {
            b.truncate(b.len() - 32);
            record::seal(b)
        };
        let mut b = sample().encode();
        b[14] = 1;
        let e = VolumeHeader::decode(&reseal(b)).unwrap_err();
        assert!(matches!(e, VolumeError::Corrupt { .. }), "{e}");
        assert!(
            e.to_string().contains("reserved bytes 12..16 are not zero"),
            "{e}"
        );

        // An authenticated volume's header is format 4, with its flag at byte 12; an
        // unknown flag is damage.
        let auth = VolumeHeader {
            integrity: true,
            ..sample()
        };
        let a = auth.encode();
        assert_eq!(u16::from_le_bytes([a[8], a[9]]), FORMAT_V4);
        assert_eq!(a[12], 1);
        assert_eq!(VolumeHeader::decode(&a).unwrap(), auth);
        let mut x = a.clone();
        x[12] = 3;
        assert!(matches!(
            VolumeHeader::decode(&reseal(x)),
            Err(VolumeError::Corrupt { .. })
        ));
        assert_eq!(sample().encode()[8], 3, "no flag: still format 3");

        let mut b = sample().encode();
        b[8] = 5;
        let e = VolumeHeader::decode(&b).unwrap_err();
        assert_eq!(
            e.to_string(),
            "volume header was written by a newer cryptvol (format version 5; this one reads 1–4): upgrade cryptvol"
        );
        assert_eq!(e.kind(), crate::volume::error::ErrorKind::NewerFormat);
        let e = record::named(e, "vol-0123456789abcdef0");
        assert!(
            e.to_string()
                .starts_with("the volume header of vol-0123456789abcdef0 was written by a newer")
        );
        b[8] = 0;
        let e = VolumeHeader::decode(&b).unwrap_err();
        assert_eq!(e.kind(), crate::volume::error::ErrorKind::Corrupt, "{e}");
    }

    /// Format 2: the same bytes without the key check field; format 1 without the endpoint
    /// field either. Both still read (a key of this data dir's KMS, with no key check);
    /// the encoder writes format 3.
    fn as_v2(h: &VolumeHeader) -> Vec<u8> {
        let mut b = h.encode();
        b.truncate(b.len() - 32 - 2);
        b[8] = 2;
        record::seal(b)
    }

    fn as_v1(h: &VolumeHeader) -> Vec<u8> {
        let mut b = h.encode();
        b.truncate(b.len() - 32 - 2 - 2);
        b[8] = 1;
        record::seal(b)
    }

    #[test]
    fn format_1_reads_as_this_data_dirs_kms() {
        let h = unchecked();
        let v1 = as_v1(&h);
        assert_eq!(v1.len(), 340);
        assert_eq!(VolumeHeader::decode(&v1).unwrap(), h);
        assert_eq!(VolumeHeader::decode(&v1).unwrap().encode()[8], 3);
        let v2 = as_v2(&h);
        assert_eq!(v2.len(), 342);
        assert_eq!(VolumeHeader::decode(&v2).unwrap(), h);
        // A v1 header with a seventh field is damaged (trailing bytes), and so is a v2
        // header without one (truncated).
        let mut long = as_v2(&h);
        long[8] = 1;
        let long = {
            long.truncate(long.len() - 32);
            record::seal(long)
        };
        assert_eq!(
            VolumeHeader::decode(&long).unwrap_err().kind(),
            crate::volume::error::ErrorKind::Corrupt
        );
        let mut short = v1.clone();
        short[8] = 2;
        let short = {
            short.truncate(short.len() - 32);
            record::seal(short)
        };
        assert_eq!(
            VolumeHeader::decode(&short).unwrap_err().kind(),
            crate::volume::error::ErrorKind::Corrupt
        );
        // A customer key never has an endpoint.
        let c = VolumeHeader {
            key: KeySource::Customer {
                salt: [1; 16],
                verifier: [2; 32],
            },
            ..h
        };
        let mut b = c.encode();
        b.truncate(b.len() - 32 - 2 - 2);
        record::push_field(&mut b, b"http://x/");
        record::push_field(&mut b, b"");
        let e = VolumeHeader::decode(&record::seal(b)).unwrap_err();
        assert!(
            e.to_string().contains("a customer key with a KMS endpoint"),
            "{e}"
        );
    }

    /// Format 3's key check: 32 bytes or empty, and never for a customer key.
    #[test]
    fn key_check_field() {
        let with_check = |check: &[u8]| {
            let mut b = unchecked().encode();
            b.truncate(b.len() - 32 - 2);
            record::push_field(&mut b, check);
            record::seal(b)
        };
        assert_eq!(
            VolumeHeader::decode(&with_check(&[9; 32])).unwrap(),
            sample()
        );
        for check in [&[9u8; 31][..], &[9u8; 33][..]] {
            let e = VolumeHeader::decode(&with_check(check)).unwrap_err();
            assert!(
                e.to_string().contains("a key check that is not 32 bytes"),
                "{e}"
            );
        }
        let c = VolumeHeader {
            key: KeySource::Customer {
                salt: [1; 16],
                verifier: [2; 32],
            },
            ..sample()
        };
        let mut b = c.encode();
        b.truncate(b.len() - 32 - 2);
        record::push_field(&mut b, &[9; 32]);
        let e = VolumeHeader::decode(&record::seal(b)).unwrap_err();
        assert!(
            e.to_string()
                .contains("a customer key with a KMS key check"),
            "{e}"
        );
    }

    #[test]
    fn every_byte_is_checked() {
        let b = VolumeHeader {
            key: KeySource::Kms {
                key_arn: "arn:aws:kms:local-1:123456789012:key/k".into(),
                wrapped: vec![7; 40],
                endpoint: Some("http://kms:9400/".into()),
                check: Some([5; 32]),
            },
            ..sample()
        }
        .encode();
        for i in 0..b.len() {
            let mut t = b.clone();
            t[i] ^= 0x10;
            assert!(VolumeHeader::decode(&t).is_err(), "byte {i}");
        }
        assert!(VolumeHeader::decode(&b[..b.len() - 1]).is_err());
    }
}
crate::serde_as_binary_record!(VolumeHeader);
