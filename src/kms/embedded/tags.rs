//! TagResource, UntagResource and ListResourceTags: a key's tags, as AWS limits them.

use super::{EmbeddedKms, checks};
use crate::aws::error::Result;
use crate::iam::caller::Caller;
use crate::kms::event::Call;
use crate::kms::ids::KeyRef;

/// AWS's limit of tags per key.
pub const MAX_TAGS: usize = 50;

impl EmbeddedKms {
    pub fn tag_resource(
        &self,
        caller: &Caller,
        r: &KeyRef,
        tags: &[(String, String)],
    ) -> Result<()> {
        let call = Call::new("TagResource", false)
            .param("keyId", r.to_string())
            .param(
                "tags",
                tags.iter()
                    .map(|(k, v)| serde_json::json!({"tagKey": k, "tagValue": v}))
                    .collect::<Vec<_>>(),
            );
        self.change_key(caller, call, r, "kms:TagResource", |k, _, _| {
            checks::check_tags(tags)?;
            self.refuse_managed(k, "tagged")?;
            let mut next = k.tags.clone();
            next.extend(tags.iter().cloned());
            checks::check_tag_count(next.len())?;
            k.tags = next;
            Ok(())
        })
    }

    pub fn untag_resource(&self, caller: &Caller, r: &KeyRef, keys: &[String]) -> Result<()> {
        let call = Call::new("UntagResource", false)
            .param("keyId", r.to_string())
            .param("tagKeys", keys.to_vec());
        self.change_key(caller, call, r, "kms:UntagResource", |k, _, _| {
            checks::check_tag_keys(keys)?;
            self.refuse_managed(k, "untagged")?;
            for t in keys {
                k.tags.remove(t);
            }
            Ok(())
        })
    }

    pub fn list_resource_tags(&self, caller: &Caller, r: &KeyRef) -> Result<serde_json::Value> {
        let mut call = Call::new("ListResourceTags", true).param("keyId", r.to_string());
        let out = self.read(|ks, _| {
            let k =
                self.resolve_authorized(ks, r, caller, &mut call, "kms:ListResourceTags", None)?;
            let tags: Vec<_> = k
                .tags
                .iter()
                .map(|(t, v)| serde_json::json!({"TagKey": t, "TagValue": v}))
                .collect();
            Ok(serde_json::json!({ "Tags": tags, "Truncated": false }))
        });
        self.finish(caller, call, out)
    }
}
