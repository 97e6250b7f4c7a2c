//! ListKeys, ListAliases, ListResourceTags and ListKeyRotations one page at a time, as AWS
//! pages them: `Limit` and `Marker` in, `Truncated` and `NextMarker` out.
//!
//! Every listing is sorted by a key that never changes (key id, alias name, tag key,
//! version number), and a marker names the last item of the page it ends: the next page
//! starts after it. So paging through a list that changes meanwhile never repeats or skips
//! an item that did not change, even when the marker's own item was deleted. A marker is
//! authenticated (a keyed blake3 hash under a key derived from the region's root key), so
//! one this KMS did not give for that listing is refused with InvalidMarkerException
//! instead of being trusted.

use serde_json::{Value, json};

use super::EmbeddedKms;
use crate::aws::b64;
use crate::aws::error::{AwsError, Result};
use crate::crypto::kdf;
use crate::iam::caller::Caller;
use crate::kms::event::Call;
use crate::kms::ids::{KeyRef, alias_arn};
use crate::kms::model::VersionOrigin;

const TAG_LEN: usize = 16;

/// `Limit` and `Marker` of a list request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paging {
    pub limit: Option<i64>,
    pub marker: Option<String>,
}

/// One page: the items and, when more follow, the marker of the next page.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_marker: Option<String>,
}

/// The listings, each with its marker domain, its default and its largest page (AWS
/// documents 1..100 for ListAliases and 1..50 for ListResourceTags; a larger Limit gets
/// that many).
#[derive(Debug, Clone, Copy)]
pub(super) enum Listing {
    Keys,
    Aliases,
    Tags,
    Rotations,
    /// ListGrants and ListRetirableGrants (grants.rs cuts their pages itself).
    Grants,
    RetirableGrants,
    /// DescribeCustomKeyStores.
    CustomKeyStores,
}

impl Listing {
    fn byte(self) -> u8 {
        match self {
            Listing::Keys => 1,
            Listing::Aliases => 2,
            Listing::Tags => 3,
            Listing::Rotations => 4,
            Listing::Grants => 5,
            Listing::RetirableGrants => 6,
            Listing::CustomKeyStores => 7,
        }
    }

    fn default_limit(self) -> usize {
        match self {
            Listing::Keys | Listing::Rotations | Listing::CustomKeyStores => 100,
            Listing::Aliases | Listing::Tags | Listing::Grants | Listing::RetirableGrants => 50,
        }
    }

    fn max_limit(self) -> usize {
        match self {
            Listing::Keys
            | Listing::Rotations
            | Listing::Grants
            | Listing::RetirableGrants
            | Listing::CustomKeyStores => 1000,
            Listing::Aliases => 100,
            Listing::Tags => 50,
        }
    }
}

fn limit_of(p: &Paging, listing: Listing) -> Result<usize> {
    let Some(n) = p.limit else {
        return Ok(listing.default_limit());
    };
    let bound = if n < 1 {
        "greater than or equal to 1"
    } else if n > 1000 {
        "less than or equal to 1000"
    } else {
        return Ok((n as usize).min(listing.max_limit()));
    };
    Err(AwsError::InvalidInput {
        message: format!(
            "1 validation error detected: Value '{n}' at 'limit' failed to satisfy constraint: Member must have value {bound}"
        ),
    })
}

fn invalid_marker(m: &str) -> AwsError {
    AwsError::InvalidMarker {
        message: format!(
            "Invalid marker '{}': pass the NextMarker of the previous page of the same listing",
            super::grants::shown(m)
        ),
    }
}

impl EmbeddedKms {
    fn marker_tag(&self, listing: Listing, scope: &str, cursor: &str) -> [u8; TAG_LEN] {
        let key = kdf::derive(
            kdf::CTX_LIST_MARKER,
            &self.derivation,
            self.dir.region.as_str().as_bytes(),
        );
        let mut h = blake3::Hasher::new_keyed(key.expose());
        h.update(&[listing.byte()]);
        h.update(&(scope.len() as u32).to_le_bytes());
        h.update(scope.as_bytes());
        h.update(cursor.as_bytes());
        let mut tag = [0u8; TAG_LEN];
        h.finalize_xof().fill(&mut tag);
        tag
    }

    fn encode_marker(&self, listing: Listing, scope: &str, cursor: &str) -> String {
        let mut raw = self.marker_tag(listing, scope, cursor).to_vec();
        raw.extend_from_slice(cursor.as_bytes());
        b64::encode(&raw)
    }

    /// The cursor a marker names, if this KMS made it for this listing and scope.
    fn decode_marker(&self, listing: Listing, scope: &str, m: &str) -> Result<String> {
        let raw = b64::decode(m).map_err(|_| invalid_marker(m))?;
        if raw.len() < TAG_LEN {
            return Err(invalid_marker(m));
        }
        let (tag, cursor) = raw.split_at(TAG_LEN);
        let cursor = std::str::from_utf8(cursor).map_err(|_| invalid_marker(m))?;
        let want = self.marker_tag(listing, scope, cursor);
        // Not secret-dependent timing worth hiding: the tag only proves we made the marker.
        if tag != want {
            return Err(invalid_marker(m));
        }
        Ok(cursor.to_string())
    }

    /// Cuts the page after the marker's cursor out of `items` (sorted by cursor).
    pub(super) fn cut<T>(
        &self,
        listing: Listing,
        scope: &str,
        items: Vec<(String, T)>,
        p: &Paging,
    ) -> Result<Page<T>> {
        let limit = limit_of(p, listing)?;
        let after = p
            .marker
            .as_deref()
            .map(|m| self.decode_marker(listing, scope, m))
            .transpose()?;
        debug_assert!(items.windows(2).all(|w| w[0].0 < w[1].0));
        let mut rest = items
            .into_iter()
            .filter(|(c, _)| after.as_ref().is_none_or(|a| c > a))
            .peekable();
        let mut page = Vec::new();
        let mut last = None;
        while page.len() < limit {
            let Some((c, item)) = rest.next() else { break };
            page.push(item);
            last = Some(c);
        }
        let next_marker = match (rest.peek(), last) {
            (Some(_), Some(c)) => Some(self.encode_marker(listing, scope, &c)),
            _ => None,
        };
        Ok(Page {
            items: page,
            next_marker,
        })
    }

    pub(super) fn paged_call(name: &'static str, p: &Paging) -> Call {
        let mut call = Call::new(name, true);
        if let Some(l) = p.limit {
            call = call.param("limit", l);
        }
        if let Some(m) = &p.marker {
            call = call.param("marker", m.as_str());
        }
        call
    }

    /// ListKeys: keys by key id.
    pub fn list_keys_page(&self, caller: &Caller, p: &Paging) -> Result<Value> {
        let call = Self::paged_call("ListKeys", p);
        let out = self
            .authorize(caller, "kms:ListKeys", None, None, &[])
            .and_then(|()| {
                self.read(|ks, _| {
                    let items = ks
                        .body
                        .keys
                        .keys()
                        .map(|id| {
                            let v = json!({"KeyId": id.to_string(), "KeyArn": self.arn(id)});
                            (id.to_string(), v)
                        })
                        .collect();
                    Ok(page_json("Keys", self.cut(Listing::Keys, "", items, p)?))
                })
            });
        self.finish(caller, call, out)
    }

    /// ListAliases: aliases by name, all or only those of one key.
    pub fn list_aliases_page(
        &self,
        caller: &Caller,
        key: Option<&KeyRef>,
        p: &Paging,
    ) -> Result<Value> {
        let call = Self::paged_call("ListAliases", p).key_param(key);
        let out = self
            .authorize(caller, "kms:ListAliases", None, None, &[])
            .and_then(|()| {
                self.read(|ks, _| {
                    let only = key.map(|r| self.resolve(ks, r)).transpose()?;
                    let items = ks
                        .body
                        .aliases
                        .iter()
                        .filter(|(_, a)| only.is_none_or(|id| a.target == id))
                        .map(|(name, a)| {
                            let v = json!({
                                "AliasName": name.as_str(),
                                "AliasArn": alias_arn(&self.dir.region, &self.account, name),
                                "TargetKeyId": a.target.to_string(),
                                "CreationDate": a.created,
                                "LastUpdatedDate": a.updated,
                            });
                            (name.to_string(), v)
                        })
                        .collect();
                    let scope = only.map(|id| id.to_string()).unwrap_or_default();
                    Ok(page_json(
                        "Aliases",
                        self.cut(Listing::Aliases, &scope, items, p)?,
                    ))
                })
            });
        self.finish(caller, call, out)
    }

    /// ListResourceTags: a key's tags by tag key.
    pub fn list_resource_tags_page(
        &self,
        caller: &Caller,
        r: &KeyRef,
        p: &Paging,
    ) -> Result<Value> {
        let mut call = Self::paged_call("ListResourceTags", p).param("keyId", r.to_string());
        let out = self.read(|ks, _| {
            let k =
                self.resolve_authorized(ks, r, caller, &mut call, "kms:ListResourceTags", None)?;
            let items = k
                .tags
                .iter()
                .map(|(t, v)| (t.clone(), json!({"TagKey": t, "TagValue": v})))
                .collect();
            Ok(page_json(
                "Tags",
                self.cut(Listing::Tags, &k.id.to_string(), items, p)?,
            ))
        });
        self.finish(caller, call, out)
    }

    /// ListKeyRotations: the key's rotations oldest first; with `all_material` (AWS's
    /// `IncludeKeyMaterial=ALL_KEY_MATERIAL`) the material the key was created with too.
    pub fn list_key_rotations_page(
        &self,
        caller: &Caller,
        r: &KeyRef,
        all_material: bool,
        p: &Paging,
    ) -> Result<Value> {
        let mut call = Self::paged_call("ListKeyRotations", p).param("keyId", r.to_string());
        if all_material {
            call = call.param("includeKeyMaterial", "ALL_KEY_MATERIAL");
        }
        let out = self.read(|ks, _| {
            let k =
                self.resolve_authorized(ks, r, caller, &mut call, "kms:ListKeyRotations", None)?;
            let current = k.current_version().number;
            let items = k
                .versions
                .iter()
                .filter(|v| all_material || v.origin != VersionOrigin::Initial)
                .map(|v| {
                    let mut e = json!({
                        "KeyId": k.id.to_string(),
                        "KeyMaterialId": v.material_id(),
                        "KeyMaterialState": if v.number == current { "CURRENT" } else { "NON_CURRENT" },
                    });
                    match v.origin {
                        VersionOrigin::Initial => {}
                        VersionOrigin::OnDemand => {
                            e["RotationDate"] = json!(v.created);
                            e["RotationType"] = json!("ON_DEMAND");
                        }
                        VersionOrigin::Automatic => {
                            e["RotationDate"] = json!(v.created);
                            e["RotationType"] = json!("AUTOMATIC");
                        }
                    }
                    // Zero-padded so that text order is version order.
                    (format!("{:010}", v.number), e)
                })
                .collect();
            Ok(page_json(
                "Rotations",
                self.cut(Listing::Rotations, &k.id.to_string(), items, p)?,
            ))
        });
        self.finish(caller, call, out)
    }
}

/// The markers of ListGrants (`retirable` false, scope: the key id) and
/// ListRetirableGrants (scope: the retiring principal), authenticated as the others.
impl EmbeddedKms {
    pub(super) fn grant_marker(&self, retirable: bool, scope: &str, cursor: &str) -> String {
        self.encode_marker(grant_listing(retirable), scope, cursor)
    }

    pub(super) fn grant_marker_cursor(
        &self,
        retirable: bool,
        scope: &str,
        m: &str,
    ) -> Result<String> {
        self.decode_marker(grant_listing(retirable), scope, m)
    }
}

fn grant_listing(retirable: bool) -> Listing {
    if retirable {
        Listing::RetirableGrants
    } else {
        Listing::Grants
    }
}

pub(super) fn page_json(field: &str, page: Page<Value>) -> Value {
    let mut v = json!({ field: page.items, "Truncated": page.next_marker.is_some() });
    if let Some(m) = page.next_marker {
        v["NextMarker"] = Value::String(m);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_as_aws() {
        let p = |l| Paging {
            limit: l,
            marker: None,
        };
        assert_eq!(limit_of(&p(None), Listing::Keys).unwrap(), 100);
        assert_eq!(limit_of(&p(None), Listing::Aliases).unwrap(), 50);
        assert_eq!(limit_of(&p(None), Listing::Tags).unwrap(), 50);
        assert_eq!(limit_of(&p(Some(1000)), Listing::Keys).unwrap(), 1000);
        assert_eq!(limit_of(&p(Some(1000)), Listing::Aliases).unwrap(), 100);
        for bad in [0, -1, 1001] {
            let e = limit_of(&p(Some(bad)), Listing::Keys).unwrap_err();
            assert_eq!(e.aws_code(), "ValidationException", "{bad}");
            assert!(e.to_string().contains("at 'limit'"), "{e}");
        }
    }
}
