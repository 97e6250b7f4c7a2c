//! The KMS files of the fixture, byte by byte as docs/formats.md describes them: account
//! and region config, keystore file and body, ciphertext blob, iam.json, usage.json, and
//! the audit trail's chain and digest.

use serde_json::Value;

use super::common::mount::VolEnv;
use super::reader::*;
use super::{FIXTURE, fixture, ids};

/// A copy of the fixture (kept alive by the returned guard) and its files.
pub fn files() -> (VolEnv, Files) {
    let v = fixture();
    let f = Files {
        data: v.data.clone(),
    };
    (v, f)
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[test]
fn doc_account_and_region_config() {
    let (_g, f) = files();
    let acct = f.json("account.json");
    let id = acct["account_id"].as_str().expect("account_id");
    assert!(id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit()) && !id.starts_with('0'));
    assert_eq!(acct.as_object().unwrap().len(), 1);

    let cfg = f.json("regions/local-1/region.json");
    let keys: Vec<&str> = cfg
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    let mut expected = vec![
        "format",
        "region",
        "account_id",
        "created",
        "root_key",
        "root_key_check",
    ];
    expected.sort();
    assert_eq!(keys, expected);
    assert_eq!(cfg["format"], 1);
    assert_eq!(cfg["region"], REGION);
    assert_eq!(cfg["account_id"], id);
    assert_eq!(cfg["root_key"], serde_json::json!({"source": "file"}));
    // root_key_check: the first 16 bytes of derive_key(CTX_ROOT_KEY_CHECK, root key).
    let check = b64(cfg["root_key_check"].as_str().unwrap());
    assert_eq!(check, derive(CTX_ROOT_KEY_CHECK, &[&f.root_key()])[..16]);
}

#[test]
fn doc_keystore_file_and_body() {
    let (_g, f) = files();
    let ids = ids();
    let b = f.read("regions/local-1/keystore.cvks");
    assert_eq!(&b[..8], b"CVKSTORE");
    assert_eq!(le16(&b, 8), 1, "format version");
    assert_eq!(&b[10..12], &[0, 0], "reserved");
    assert!(le64(&b, 12) >= 1, "generation counts the writes");
    let n = le32(&b, 32) as usize;
    assert_eq!(b.len(), 52 + n, "file size is exactly 52 + N");

    let body = f.keystore_body();
    let acct = f.json("account.json")["account_id"].clone();
    assert_eq!(body["region"], REGION);
    assert_eq!(body["account_id"], acct);
    let keys = body["keys"].as_object().unwrap();
    assert_eq!(keys.len(), 1, "{body:#}");
    let k = &keys[&ids.key_id];
    assert_eq!(k["id"], ids.key_id.as_str());
    assert_eq!(k["description"], "format fixture v1");
    assert_eq!(k["state"], "Enabled");
    assert_eq!(k["manager"], "CUSTOMER");
    assert_eq!(k["rotation"]["enabled"], false);
    let versions = k["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0]["number"], 1);
    assert_eq!(versions[0]["origin"], "INITIAL");
    assert!(is_hex(versions[0]["material_id"].as_str().unwrap(), 64));
    // The sealed material opens only with its own key id and number as AAD.
    f.version_material(&ids.key_id, 1);
    let key = derive(CTX_KEY_VERSION_SEAL, &[&f.root_key()]);
    let sealed = b64(versions[0]["sealed"].as_str().unwrap());
    let mut aad = b"cmk-version".to_vec();
    aad.extend_from_slice(&uuid_bytes(&ids.key_id));
    aad.extend_from_slice(&2u32.to_le_bytes());
    assert!(
        open_sealed(&key, &aad, &sealed).is_none(),
        "another version number opens it"
    );

    let alias = &body["aliases"][&ids.alias];
    assert_eq!(alias["target"], ids.key_id.as_str(), "{body:#}");
    assert!(alias["created"].is_i64() && alias["updated"].is_i64());
    assert_eq!(body["deleted_keys"], serde_json::json!({}));

    // The grant `volume create` made: to the volume service, Decrypt, bound to the lineage.
    let grants = body["grants"][&ids.key_id]
        .as_array()
        .expect("the volume's grant");
    assert_eq!(grants.len(), 1);
    let g = &grants[0];
    assert!(is_hex(g["id"].as_str().unwrap(), 64), "{g:#}");
    assert_eq!(g["grantee"], "ec2.local-1.amazonaws.com");
    assert_eq!(g["operations"], serde_json::json!(["Decrypt"]));
    assert_eq!(
        g["constraint"],
        serde_json::json!({"EncryptionContextSubset": {"cryptvol:lineage": ids.volume}})
    );
    assert_eq!(
        g["issuing_account"],
        format!("arn:aws:iam::{}:root", acct.as_str().unwrap())
    );

    // The AAD is the header: a changed generation fails authentication.
    let mut t = b.clone();
    t[12] ^= 1;
    let k = derive(CTX_KEYSTORE_SEAL, &[&f.root_key()]);
    assert!(gcm_open(&k, &t[20..32], &t[..36], &t[36..]).is_none());
}

#[test]
fn doc_ciphertext_blob() {
    let (_g, f) = files();
    let ids = ids();
    let bytes = std::fs::read(format!("{FIXTURE}/blob.bin")).unwrap();
    let blob = parse_blob(&bytes);
    assert_eq!(blob.version, 1);
    assert_eq!(blob.region, REGION);
    assert_eq!(blob.key_id, uuid_bytes(&ids.key_id));
    assert_eq!(blob.key_version, 1);
    let p = ids.plaintext.len();
    // 3 + 1 + 1 + R + 16 + 4 + 16 + 12 + P + 16.
    assert_eq!(bytes.len(), 3 + 1 + 1 + 7 + 16 + 4 + 16 + 12 + p + 16);
    assert_eq!(bytes.len(), 53 + 7 + p + 16);
    let m = f.version_material(&ids.key_id, 1);
    let plain = open_blob(&blob, &m, &[("purpose", "fixture-v1")]).expect("the blob opens");
    assert_eq!(plain, ids.plaintext.as_bytes());
    assert!(open_blob(&blob, &m, &[("purpose", "fixture-v2")]).is_none());
    assert!(open_blob(&blob, &m, &[]).is_none());
}

#[test]
fn doc_encryption_context_worked_example() {
    let e = encode_context(&[("cryptvol:lineage", "vol-0123456789abcdef0")]);
    let mut want = vec![1, 0, 0, 0, 0x10, 0, 0, 0];
    want.extend_from_slice(b"cryptvol:lineage");
    want.extend_from_slice(&[0x15, 0, 0, 0]);
    want.extend_from_slice(b"vol-0123456789abcdef0");
    assert_eq!(e, want);
    assert_eq!(e.len(), 49);
    assert_eq!(encode_context(&[]), [0, 0, 0, 0]);
}

#[test]
fn doc_identity_file() {
    let (_g, f) = files();
    let ids = ids();
    let raw = f.read("iam.json");
    assert!(
        raw.starts_with(b"{\n  \"format\": 1,"),
        "pretty-printed, format first"
    );
    let iam: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(iam["format"], 1);
    assert_eq!(iam["roles"], serde_json::json!({}));
    let u = &iam["users"][&ids.user];
    let uid = u["id"].as_str().unwrap();
    assert!(uid.starts_with("AIDA") && uid.len() == 21, "{uid}");
    assert!(ids.access_key_id.starts_with("AKIA") && ids.access_key_id.len() == 20);
    let ak = &u["access_keys"][&ids.access_key_id];
    assert_eq!(ak["status"], "Active");
    let sealed = b64(ak["sealed_secret"].as_str().unwrap());
    assert_eq!(
        sealed.len(),
        12 + 40 + 16,
        "nonce ‖ 40-character secret ‖ tag"
    );
    let iam_key: [u8; 32] = f.read("iam.key").try_into().expect("iam.key is 32 bytes");
    let secret = open_sealed(&iam_key, ids.access_key_id.as_bytes(), &sealed)
        .expect("the secret opens with the access key id as AAD");
    assert_eq!(b64(std::str::from_utf8(&secret).unwrap()).len(), 30);
    assert!(open_sealed(&iam_key, b"AKIAOTHER", &sealed).is_none());
}

#[test]
fn doc_usage_file() {
    let (_g, f) = files();
    let ids = ids();
    let u = f.json("regions/local-1/usage.json");
    assert_eq!(u["format"], 1);
    let months = u["months"].as_object().unwrap();
    assert_eq!(months.len(), 1);
    let (month, cols) = months.iter().next().unwrap();
    assert!(month.len() == 7 && month.as_bytes()[4] == b'-', "{month}");
    let acct = f.json("account.json")["account_id"]
        .as_str()
        .unwrap()
        .to_string();
    let arn = format!("arn:aws:kms:{REGION}:{acct}:key/{}", ids.key_id);
    let ops = &cols[&arn];
    assert_eq!(ops["Encrypt"], 1, "{u:#}");
    assert_eq!(ops["CreateKey"], 1);
    assert_eq!(ops["GenerateDataKey"], 1);
    assert!(
        cols.as_object()
            .unwrap()
            .keys()
            .all(|k| k == "-" || k.starts_with("arn:aws:kms:"))
    );
}

/// The event bytes the chain hashes: the line up to the last `,"cryptvolChain":{`, plus `}`.
fn chained_event(line: &str) -> (Vec<u8>, Value) {
    let cut = line
        .rfind(",\"cryptvolChain\":{")
        .expect("a cryptvolChain member");
    let mut ev = line.as_bytes()[..cut].to_vec();
    ev.push(b'}');
    let v: Value = serde_json::from_str(line).unwrap();
    (ev, v["cryptvolChain"].clone())
}

#[test]
fn doc_audit_chain_and_digest() {
    let (_g, f) = files();
    let dir = f.region().join("audit");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".jsonl"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    let mut region_input = f.root_key().to_vec();
    region_input.extend_from_slice(REGION.as_bytes());
    let k = derive(CTX_AUDIT_CHAIN, &[&region_input]);

    let (mut seq, mut prev) = (0u64, [0u8; 32]);
    for name in &names {
        // YYYYMMDD-<first seq, 12 digits>.jsonl
        let (date, first) = name.trim_end_matches(".jsonl").split_once('-').unwrap();
        assert!(date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(first.len(), 12);
        assert_eq!(first.parse::<u64>().unwrap(), seq + 1, "{name}");
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        assert!(text.ends_with('\n'));
        let first_prev = prev;
        for line in text.lines() {
            let (event, chain) = chained_event(line);
            seq += 1;
            assert_eq!(chain["seq"], seq, "{line}");
            assert_eq!(chain["prev"], hex(&prev), "{line}");
            let mut m = b"cryptvol audit event v1".to_vec();
            m.extend_from_slice(&seq.to_le_bytes());
            m.extend_from_slice(&prev);
            m.extend_from_slice(&event);
            let h = blake3::keyed_hash(&k, &m);
            assert_eq!(chain["hash"], hex(h.as_bytes()), "event {seq}");
            prev = *h.as_bytes();
            let ev: Value = serde_json::from_slice(&event).unwrap();
            assert_eq!(ev["eventVersion"], "1.08");
            assert_eq!(ev["eventSource"], "kms.amazonaws.com");
            assert_eq!(ev["awsRegion"], REGION);
        }
        let digest_path = dir.join(name.replace(".jsonl", ".digest.json"));
        if !digest_path.exists() {
            continue;
        }
        let raw = std::fs::read_to_string(&digest_path).unwrap();
        let d: Value = serde_json::from_str(&raw).unwrap();
        let order: Vec<&str> = d.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        let mut doc_order = vec![
            "digestVersion",
            "logFile",
            "firstSeq",
            "lastSeq",
            "eventCount",
            "logFileBlake3",
            "lastEventHash",
            "previousDigestHash",
            "sealedAt",
            "digestHash",
        ];
        let mut sorted = order.clone();
        sorted.sort();
        doc_order.sort();
        assert_eq!(sorted, doc_order, "the digest's members");
        assert_eq!(d["digestVersion"], 1);
        assert_eq!(d["logFile"], name.as_str());
        assert_eq!(d["lastSeq"], seq);
        assert_eq!(d["eventCount"], text.lines().count());
        assert_eq!(
            d["logFileBlake3"],
            hex(blake3::hash(text.as_bytes()).as_bytes())
        );
        assert_eq!(d["lastEventHash"], hex(&prev));
        assert_eq!(
            d["previousDigestHash"],
            Value::Null,
            "the first sealed file"
        );
        assert_ne!(first_prev, prev);
        // digestHash = keyed(K, "cryptvol audit digest v1" ‖ compact JSON of the others,
        // in the documented order).
        let body = format!(
            r#"{{"digestVersion":1,"logFile":{},"firstSeq":{},"lastSeq":{},"eventCount":{},"logFileBlake3":{},"lastEventHash":{},"previousDigestHash":null,"sealedAt":{}}}"#,
            d["logFile"],
            d["firstSeq"],
            d["lastSeq"],
            d["eventCount"],
            d["logFileBlake3"],
            d["lastEventHash"],
            d["sealedAt"]
        );
        let mut m = b"cryptvol audit digest v1".to_vec();
        m.extend_from_slice(body.as_bytes());
        assert_eq!(d["digestHash"], hex(blake3::keyed_hash(&k, &m).as_bytes()));
        assert!(d["sealedAt"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(seq, 8, "the fixture's trail has 8 events");
}
