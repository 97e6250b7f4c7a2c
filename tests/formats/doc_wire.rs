//! What the KMS hands out but never stores, as docs/formats.md describes it: grant tokens
//! and list paging markers, made by today's cryptvol on a copy of the fixture and checked
//! with the fixture's root key.

use super::common::unb64;
use super::doc_kms::files;
use super::ids;
use super::reader::*;

const CTX_GRANT_TOKEN: &str = "cryptvol 2026-11-29 kms grant token v1";
const CTX_LIST_MARKER: &str = "cryptvol 2026-11-29 list paging marker v1";

fn region_key(root: &[u8; 32], context: &str) -> [u8; 32] {
    let mut input = root.to_vec();
    input.extend_from_slice(REGION.as_bytes());
    derive(context, &[&input])
}

#[test]
fn doc_grant_token() {
    let (v, f) = files();
    let ids = ids();
    let g = v.json(&[
        "kms",
        "create-grant",
        "--key-id",
        &ids.alias,
        "--grantee-principal",
        "ec2.local-1.amazonaws.com",
        "--operations",
        "Decrypt",
    ]);
    let token = unb64(g["GrantToken"].as_str().unwrap());
    assert_eq!(token.len(), 84);
    assert_eq!(&token[..4], b"cvg1");
    assert_eq!(token[4..20], uuid_bytes(&ids.key_id));
    assert_eq!(hex(&token[20..52]), g["GrantId"].as_str().unwrap());
    let k = region_key(&f.root_key(), CTX_GRANT_TOKEN);
    let mac = blake3::keyed_hash(&k, &token[..68]);
    assert_eq!(
        &token[68..],
        &mac.as_bytes()[..16],
        "MAC over the first 68 bytes"
    );
}

#[test]
fn doc_list_paging_marker() {
    let (v, f) = files();
    v.create_key();
    let page = v.json(&["kms", "list-keys", "--limit", "1"]);
    assert_eq!(page["Truncated"], true, "{page:#}");
    let cursor = page["Keys"][0]["KeyId"].as_str().unwrap();
    let marker = unb64(page["NextMarker"].as_str().unwrap());
    assert_eq!(
        &marker[16..],
        cursor.as_bytes(),
        "tag ‖ cursor (the page's last key id)"
    );
    let k = region_key(&f.root_key(), CTX_LIST_MARKER);
    // listing 1 (keys) ‖ len(scope) = 0 ‖ scope (empty) ‖ cursor
    let mut m = vec![1u8];
    m.extend_from_slice(&0u32.to_le_bytes());
    m.extend_from_slice(cursor.as_bytes());
    assert_eq!(&marker[..16], &blake3::keyed_hash(&k, &m).as_bytes()[..16]);
}
