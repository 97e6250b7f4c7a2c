//! An independent reader of cryptvol's formats, written from docs/formats.md alone: the
//! key derivations, the AES-256-GCM and AES-256-XTS steps and the record framings are done
//! here with the crates themselves (blake3, aes-gcm, aes, xts-mode), not with cryptvol's
//! code, so a change of a format in the code that the document does not follow fails.

use std::path::{Path, PathBuf};

use aes::Aes256;
use aes::cipher::{Array, KeyInit as _};
use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, Payload};
use serde_json::Value;
use xts_mode::{Xts128, get_tweak_default};

// The context strings of docs/formats.md, "Key derivation contexts".
pub const CTX_KEYSTORE_SEAL: &str = "cryptvol 2026-11-29 region keystore seal v1";
pub const CTX_KEY_VERSION_SEAL: &str = "cryptvol 2026-11-29 cmk version seal v1";
pub const CTX_ROOT_KEY_CHECK: &str = "cryptvol 2026-11-29 root key check v1";
pub const CTX_BLOB_KEY: &str = "cryptvol 2026-11-29 kms blob message key v1";
pub const CTX_AUDIT_CHAIN: &str = "cryptvol 2026-11-29 audit trail chain v1";
pub const CTX_VOLUME_XTS: &str = "cryptvol 2026-11-29 volume aes-256-xts key v1";
pub const CTX_DATA_KEY_CHECK: &str = "cryptvol 2026-12-02 volume data key check v1";

pub const REGION: &str = "local-1";

/// `blake3::derive_key(context, parts…)`.
pub fn derive(context: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(context);
    for p in parts {
        h.update(p);
    }
    *h.finalize().as_bytes()
}

/// AES-256-GCM open of `ciphertext ‖ tag`.
pub fn gcm_open(key: &[u8; 32], nonce: &[u8], aad: &[u8], ct_and_tag: &[u8]) -> Option<Vec<u8>> {
    let c = Aes256Gcm::new_from_slice(key).expect("32-byte key");
    let nonce: [u8; 12] = nonce.try_into().expect("12-byte nonce");
    c.decrypt(
        &nonce.into(),
        Payload {
            msg: ct_and_tag,
            aad,
        },
    )
    .ok()
}

/// `nonce (12) ‖ AES-256-GCM(…) ‖ tag (16)`, the sealed form of version material and of
/// access key secrets.
pub fn open_sealed(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    let (nonce, rest) = sealed.split_at(12);
    gcm_open(key, nonce, aad, rest)
}

pub fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
pub fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
pub fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The 16 bytes of a UUID in RFC 9562 order.
pub fn uuid_bytes(id: &str) -> [u8; 16] {
    unhex(&id.replace('-', "")).try_into().expect("16 bytes")
}

/// The canonical encryption context ("Encryption context").
pub fn encode_context(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut sorted = pairs.to_vec();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = (sorted.len() as u32).to_le_bytes().to_vec();
    for (k, v) in sorted {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

/// The fixture's files, read from a copy of it.
pub struct Files {
    pub data: PathBuf,
}

impl Files {
    pub fn region(&self) -> PathBuf {
        self.data.join("regions").join(REGION)
    }
    pub fn read(&self, rel: &str) -> Vec<u8> {
        let p = self.data.join(rel);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"))
    }
    pub fn json(&self, rel: &str) -> Value {
        serde_json::from_slice(&self.read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }
    pub fn root_key(&self) -> [u8; 32] {
        self.read("regions/local-1/root.key")
            .try_into()
            .expect("root.key is 32 raw bytes")
    }

    /// The keystore body, decrypted as "Keystore file" says.
    pub fn keystore_body(&self) -> Value {
        let b = self.read("regions/local-1/keystore.cvks");
        let n = le32(&b, 32) as usize;
        let key = derive(CTX_KEYSTORE_SEAL, &[&self.root_key()]);
        let plain = gcm_open(&key, &b[20..32], &b[..36], &b[36..]).expect("the keystore opens");
        assert_eq!(plain.len(), n);
        serde_json::from_slice(&plain).expect("the keystore body is JSON")
    }

    /// The material of version `number` of key `id`, unsealed as "Keystore body" says.
    pub fn version_material(&self, id: &str, number: u32) -> [u8; 32] {
        let body = self.keystore_body();
        let v = body["keys"][id]["versions"]
            .as_array()
            .expect("versions")
            .iter()
            .find(|v| v["number"] == number)
            .expect("the version")
            .clone();
        let sealed = b64(v["sealed"].as_str().expect("sealed"));
        assert_eq!(sealed.len(), 60, "sealed is 12 + 32 + 16 bytes");
        let mut aad = b"cmk-version".to_vec();
        aad.extend_from_slice(&uuid_bytes(id));
        aad.extend_from_slice(&number.to_le_bytes());
        let key = derive(CTX_KEY_VERSION_SEAL, &[&self.root_key()]);
        open_sealed(&key, &aad, &sealed)
            .expect("the version material unseals")
            .try_into()
            .expect("32 bytes of material")
    }
}

pub fn b64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_else(|e| panic!("{s:?} is not base64: {e}"))
}

/// A ciphertext blob, field by field ("KMS ciphertext blob").
#[derive(Debug)]
pub struct Blob<'a> {
    pub version: u8,
    pub region: &'a str,
    pub key_id: [u8; 16],
    pub key_version: u32,
    pub salt: &'a [u8],
    pub nonce: &'a [u8],
    /// Bytes 0 .. 53+R.
    pub header: &'a [u8],
    pub ct_and_tag: &'a [u8],
}

pub fn parse_blob(b: &[u8]) -> Blob<'_> {
    assert_eq!(&b[..3], b"CVK", "magic");
    let r = b[4] as usize;
    assert!((1..=32).contains(&r), "region length {r}");
    let at = 5 + r;
    Blob {
        version: b[3],
        region: std::str::from_utf8(&b[5..at]).expect("ASCII region"),
        key_id: b[at..at + 16].try_into().unwrap(),
        key_version: le32(b, at + 16),
        salt: &b[at + 20..at + 36],
        nonce: &b[at + 36..at + 48],
        header: &b[..at + 48],
        ct_and_tag: &b[at + 48..],
    }
}

/// Decrypts a blob with its version's material and the context.
pub fn open_blob(blob: &Blob, material: &[u8; 32], context: &[(&str, &str)]) -> Option<Vec<u8>> {
    let key = derive(CTX_BLOB_KEY, &[material, blob.salt]);
    let mut aad = blob.header.to_vec();
    aad.extend_from_slice(&encode_context(context));
    gcm_open(&key, blob.nonce, &aad, blob.ct_and_tag)
}

/// A record of the volume-header framing: magic, version, fixed bytes, `u16 length ‖
/// bytes` fields, blake3 of the rest ("Volume header", "Snapshot record").
pub struct Record<'a> {
    pub fixed: &'a [u8],
    pub fields: Vec<&'a [u8]>,
}

pub fn parse_record<'a>(b: &'a [u8], magic: &[u8; 8], fixed: usize, n: usize) -> Record<'a> {
    parse_record_version(b, magic, 1, fixed, n)
}

/// [`parse_record`] of a record of format `version`.
pub fn parse_record_version<'a>(
    b: &'a [u8],
    magic: &[u8; 8],
    version: u16,
    fixed: usize,
    n: usize,
) -> Record<'a> {
    assert_eq!(&b[..8], magic, "magic");
    assert_eq!(le16(b, 8), version, "format version");
    let (body, sum) = b.split_at(b.len() - 32);
    assert_eq!(
        blake3::hash(body).as_bytes(),
        sum,
        "the last 32 bytes are blake3 of the rest"
    );
    let mut at = 10 + fixed;
    let mut fields = vec![];
    for _ in 0..n {
        let len = le16(body, at) as usize;
        fields.push(&body[at + 2..at + 2 + len]);
        at += 2 + len;
    }
    assert_eq!(
        at,
        body.len(),
        "no byte after the last field but the checksum"
    );
    Record {
        fixed: &body[10..10 + fixed],
        fields,
    }
}

/// The volume's AES-256-XTS key from its 64-byte data key ("Volume keys").
pub fn xts(dek: &[u8]) -> Xts128<Aes256> {
    let mut k = [0u8; 64];
    let mut h = blake3::Hasher::new_derive_key(CTX_VOLUME_XTS);
    h.update(dek);
    h.finalize_xof().fill(&mut k);
    let (k1, k2) = (k[..32].try_into().unwrap(), k[32..].try_into().unwrap());
    assert_ne!(k1, k2, "K1 = K2 is refused");
    Xts128::new(Aes256::new(&Array(k1)), Aes256::new(&Array(k2)))
}

/// Reads `size` bytes of a volume from the pool data file, given its map (chunk → slot).
pub fn read_volume(
    pool_file: &Path,
    chunk: u64,
    size: u64,
    map: &std::collections::BTreeMap<u64, u64>,
    x: &Xts128<Aes256>,
) -> Vec<u8> {
    let data = std::fs::read(pool_file).expect("pool data file");
    let mut out = vec![0u8; size as usize];
    for (&c, &slot) in map {
        for b in 0..chunk / 4096 {
            let at = (slot * chunk + b * 4096) as usize;
            let mut block = data[at..at + 4096].to_vec();
            let n = c * (chunk / 4096) + b;
            let dst = &mut out[(n * 4096) as usize..(n * 4096 + 4096) as usize];
            if block.iter().all(|x| *x == 0) {
                continue; // never written: reads as zeros
            }
            x.decrypt_area(&mut block, 4096, n.into(), get_tweak_default);
            dst.copy_from_slice(&block);
        }
    }
    out
}
