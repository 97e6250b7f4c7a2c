//! A secret's life: CreateSecret, DescribeSecret, UpdateSecret, DeleteSecret (a recovery
//! window of 7 to 30 days, or at once), RestoreSecret, TagResource and UntagResource.

use serde_json::{Value, json};

use super::envelope::{self, Plain};
use super::errors::{self, validation};
use super::model::{Deletion, Rotation, SecretRecord, Tag};
use super::request::Request;
use super::{Call, SecretsManager};
use crate::aws::AwsError;
use crate::crypto::SecretBytes;
use crate::kms::model::DAY;

/// AWS's limits.
pub const MAX_VALUE_BYTES: usize = 65_536;
pub const MAX_TAGS: usize = 50;
pub const RECOVERY_WINDOW_DAYS: std::ops::RangeInclusive<i64> = 7..=30;
pub const DEFAULT_RECOVERY_WINDOW_DAYS: i64 = 30;

/// A secret's name: 1 to 512 of ASCII letters, digits and `/_+=.@-`.
fn check_name(name: &str) -> Result<(), AwsError> {
    let ok = !name.is_empty()
        && name.len() <= 512
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(validation(
            "Name",
            format!("'{name}' must be 1 to 512 ASCII letters, digits or /_+=.@- characters"),
        ))
    }
}

/// The value a request carries (`SecretString` or base64 `SecretBinary`), if any.
pub(super) fn value_of(r: &Request) -> Result<Option<Plain>, AwsError> {
    let value = match (r.str("SecretString")?, r.str("SecretBinary")?) {
        (Some(_), Some(_)) => {
            return Err(errors::invalid_parameter(
                "You can't specify both a binary secret value and a string secret value in the same secret.",
            ));
        }
        (Some(s), None) => Plain {
            bytes: SecretBytes::new(s.as_bytes().to_vec()),
            binary: false,
        },
        (None, Some(b64)) => Plain {
            bytes: SecretBytes::new(
                crate::aws::b64::decode(b64)
                    .map_err(|_| validation("SecretBinary", "is not base64"))?,
            ),
            binary: true,
        },
        (None, None) => return Ok(None),
    };
    let n = value.bytes.expose().len();
    if n > MAX_VALUE_BYTES || (n == 0 && value.binary) {
        return Err(validation(
            if value.binary {
                "SecretBinary"
            } else {
                "SecretString"
            },
            format!("must be 1 to {MAX_VALUE_BYTES} bytes, not {n}"),
        ));
    }
    Ok(Some(value))
}

/// `Tags` as a request gives them, checked as AWS checks them.
pub(super) fn tags_of(r: &Request, member: &str) -> Result<Vec<Tag>, AwsError> {
    let Some(v) = r.get(member) else {
        return Ok(Vec::new());
    };
    let items = v
        .as_array()
        .ok_or_else(|| validation(member, "must be a list of {Key, Value}"))?;
    if items.len() > MAX_TAGS {
        return Err(errors::limit(format!(
            "a request carries at most {MAX_TAGS} tags, not {}",
            items.len()
        )));
    }
    let mut out: Vec<Tag> = Vec::new();
    for item in items {
        let key = item["Key"]
            .as_str()
            .ok_or_else(|| validation(member, "each tag needs a string Key"))?;
        let value = match &item["Value"] {
            Value::Null => "",
            Value::String(v) => v.as_str(),
            _ => {
                return Err(validation(
                    member,
                    format!("the Value of tag '{key}' must be a string"),
                ));
            }
        };
        check_tag(key, value)?;
        out.retain(|t| t.key != key);
        out.push(Tag {
            key: key.to_string(),
            value: value.to_string(),
        });
    }
    Ok(out)
}

fn check_tag(key: &str, value: &str) -> Result<(), AwsError> {
    let n = key.chars().count();
    if !(1..=128).contains(&n) || value.chars().count() > 256 {
        return Err(validation(
            "Tags",
            format!("tag key '{key}' must be 1 to 128 characters and its value at most 256"),
        ));
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err(errors::invalid_parameter(format!(
            "tag key '{key}': the aws: prefix is reserved for AWS"
        )));
    }
    if key.chars().chain(value.chars()).any(char::is_control) {
        return Err(validation(
            "Tags",
            format!("tag key '{key}' or its value has a control character"),
        ));
    }
    Ok(())
}

fn merge_tags(into: &mut Vec<Tag>, new: Vec<Tag>) -> Result<(), AwsError> {
    for t in new {
        into.retain(|o| o.key != t.key);
        into.push(t);
    }
    if into.len() > MAX_TAGS {
        return Err(errors::limit(format!(
            "a secret has at most {MAX_TAGS} tags"
        )));
    }
    Ok(())
}

/// Six random letters and digits, the suffix AWS gives every secret's ARN.
fn arn_suffix() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::new();
    while out.len() < 6 {
        let b: [u8; 1] = crate::crypto::random::array();
        // 248 = 4 × 62: rejecting above keeps every character equally likely.
        if b[0] < 248 {
            out.push(ALPHABET[(b[0] % 62) as usize] as char);
        }
    }
    out
}

pub(super) fn times(t: Option<i64>) -> Value {
    t.map(Value::from).unwrap_or(Value::Null)
}

fn tags_json(tags: &[Tag]) -> Value {
    tags.iter()
        .map(|t| json!({"Key": t.key, "Value": t.value}))
        .collect()
}

/// A secret's metadata as DescribeSecret and ListSecrets give it.
pub(super) fn metadata(s: &SecretRecord, versions_member: &str, region: &str) -> Value {
    let mut v = json!({
        "ARN": s.arn,
        "Name": s.name,
        "RotationEnabled": s.rotation.enabled,
        "LastChangedDate": s.last_changed,
        "CreatedDate": s.created,
        "PrimaryRegion": region,
    });
    let o = v.as_object_mut().expect("an object");
    let mut put = |k: &str, x: Value| {
        if !x.is_null() {
            o.insert(k.to_string(), x);
        }
    };
    put(
        "Description",
        s.description
            .clone()
            .map(Value::from)
            .unwrap_or(Value::Null),
    );
    put(
        "KmsKeyId",
        s.kms_key_id.clone().map(Value::from).unwrap_or(Value::Null),
    );
    put("LastAccessedDate", times(s.last_accessed));
    put("LastRotatedDate", times(s.rotation.last_rotated));
    put(
        "NextRotationDate",
        times(s.rotation.next_rotation.filter(|_| s.rotation.enabled)),
    );
    put("DeletedDate", times(s.deletion.map(|d| d.requested)));
    // Not AWS's: the local command that rotates the secret (AWS names a Lambda ARN here).
    put(
        "RotationCommand",
        s.rotation
            .command
            .clone()
            .map(Value::from)
            .unwrap_or(Value::Null),
    );
    if let Some(rules) = &s.rotation.rules {
        let mut r = serde_json::Map::new();
        if let Some(d) = rules.automatically_after_days {
            r.insert("AutomaticallyAfterDays".into(), d.into());
        }
        if let Some(d) = &rules.duration {
            r.insert("Duration".into(), d.clone().into());
        }
        if let Some(e) = &rules.schedule_expression {
            r.insert("ScheduleExpression".into(), e.clone().into());
        }
        put("RotationRules", Value::Object(r));
    }
    if !s.tags.is_empty() {
        put("Tags", tags_json(&s.tags));
    }
    put(versions_member, json!(s.version_stages()));
    v
}

/// `{ARN, Name}`, the answer of most changes.
pub(super) fn arn_name(s: &SecretRecord) -> Value {
    json!({"ARN": s.arn, "Name": s.name})
}

impl SecretsManager {
    pub(super) fn create_secret(&self, c: &Call, r: &Request) -> Result<Value, AwsError> {
        let name = r.required_str("Name")?;
        check_name(name)?;
        let description = r.str_len("Description", 0, 2048)?.map(str::to_string);
        let kms_key_id = r.str_len("KmsKeyId", 0, 2048)?.filter(|k| !k.is_empty());
        let token = r.str_len("ClientRequestToken", 32, 64)?;
        let value = value_of(r)?;
        let mut tags = Vec::new();
        merge_tags(&mut tags, tags_of(r, "Tags")?)?;
        if r.has("AddReplicaRegions") {
            return Err(errors::invalid_request(
                "replication to other regions is not supported: copy the secret with CreateSecret in the other region",
            ));
        }
        // Authorized on the ARN the secret will have, as AWS does (a policy may name
        // `secret:NAME-*`).
        let arn = format!(
            "arn:aws:secretsmanager:{}:{}:secret:{name}-{}",
            self.kms.region(),
            self.kms.account(),
            arn_suffix()
        );
        self.change(c, |body, now| {
            let target = super::access::Target {
                resource: &arn,
                shown: &self.arn_for_unknown(name),
                secret: None,
            };
            super::access::authorize(
                &self.kms,
                c.caller,
                "secretsmanager:CreateSecret",
                &target,
                &c.conditions,
            )?;
            if let Some(existing) = body.secrets.values().find(|s| s.name == name) {
                if existing.deletion.is_some() {
                    return Err(errors::invalid_request(format!(
                        "You can't create this secret because a secret with the name {name} is already scheduled for deletion (restore it, or delete it with ForceDeleteWithoutRecovery)"
                    )));
                }
                // A retry of the same request (same token, same value) answers as before.
                if let (Some(t), Some(v)) = (token, &value)
                    && existing
                        .versions
                        .get(t)
                        .is_some_and(|ver| ver.sealed.digest == envelope::digest(&self.store_key, v))
                {
                    return Ok(json!({"ARN": existing.arn, "Name": name, "VersionId": t}));
                }
                return Err(errors::exists(format!(
                    "The operation failed because the secret {name} already exists."
                )));
            }
            let mut s = SecretRecord {
                arn: arn.clone(),
                name: name.to_string(),
                description,
                kms_key_id: kms_key_id.map(str::to_string),
                created: now,
                last_changed: now,
                last_accessed: None,
                deletion: None,
                tags,
                policy: None,
                policy_principals: Default::default(),
                rotation: Rotation::default(),
                versions: Default::default(),
            };
            let mut out = json!({"ARN": arn, "Name": name});
            if let Some(v) = &value {
                out["VersionId"] = self.add_current(c, body, &mut s, token, v, now)?.into();
            }
            body.secrets.insert(arn.clone(), s);
            Ok(out)
        })
    }

    /// A new version of `s` with `value` under AWSCURRENT; its id is `token` or a new
    /// UUID.
    fn add_current(
        &self,
        c: &Call,
        body: &mut super::model::StoreBody,
        s: &mut SecretRecord,
        token: Option<&str>,
        value: &Plain,
        now: i64,
    ) -> Result<String, AwsError> {
        let vid = token
            .map(str::to_string)
            .unwrap_or_else(crate::kms::event::fast_uuid);
        self.add_version(c, body, s, &vid, value, &[super::model::AWSCURRENT], now)?;
        Ok(vid)
    }

    pub(super) fn describe_secret(&self, c: &Call, r: &Request) -> Result<Value, AwsError> {
        let id = r.required_str("SecretId")?;
        let body = self.load()?;
        let s = self.authorized(c, &body, id, "secretsmanager:DescribeSecret")?;
        Ok(metadata(
            s,
            "VersionIdsToStages",
            self.kms.region().as_str(),
        ))
    }

    pub(super) fn update_secret(&self, c: &Call, r: &Request) -> Result<Value, AwsError> {
        let id = r.required_str("SecretId")?;
        let description = r.str_len("Description", 0, 2048)?;
        let kms_key_id = r.str_len("KmsKeyId", 0, 2048)?;
        let token = r.str_len("ClientRequestToken", 32, 64)?;
        let value = value_of(r)?;
        self.change(c, |body, now| {
            let arn = self.authorized_arn(c, body, id, "secretsmanager:UpdateSecret")?;
            let mut s = body.secrets[&arn].clone();
            if s.deletion.is_some() {
                return Err(errors::marked_for_deletion(&arn));
            }
            if let Some(d) = description {
                s.description = Some(d.to_string());
            }
            if let Some(k) = kms_key_id {
                let new = Some(k.to_string()).filter(|k| !k.is_empty());
                if new != s.kms_key_id {
                    s.kms_key_id = new;
                    self.reseal_labelled(c, &mut s)?;
                }
            }
            let mut out = arn_name(&s);
            if let Some(v) = &value {
                out["VersionId"] = self.add_current(c, body, &mut s, token, v, now)?.into();
            }
            s.last_changed = now;
            body.secrets.insert(arn, s);
            Ok(out)
        })
    }

    /// After a key change: the labelled versions (AWSCURRENT, AWSPENDING, AWSPREVIOUS and
    /// any other label) sealed again under the secret's new key, as AWS does.
    fn reseal_labelled(&self, c: &Call, s: &mut SecretRecord) -> Result<(), AwsError> {
        let arn = s.arn.clone();
        let key = s.kms_key_id.clone();
        for (vid, v) in s.versions.iter_mut() {
            if v.stages.is_empty() {
                continue;
            }
            let plain = envelope::open(&self.kms, c.caller, &arn, vid, &v.sealed)?;
            v.sealed = envelope::seal(
                &self.kms,
                c.caller,
                key.as_deref(),
                &arn,
                vid,
                &plain,
                &self.store_key,
            )?;
        }
        Ok(())
    }

    pub(super) fn delete_secret(&self, c: &Call, r: &Request) -> Result<Value, AwsError> {
        let id = r.required_str("SecretId")?;
        let window = r.int("RecoveryWindowInDays", i64::MIN, i64::MAX)?;
        let force = r.bool("ForceDeleteWithoutRecovery")?.unwrap_or(false);
        if force && window.is_some() {
            return Err(errors::invalid_parameter(
                "You can't use ForceDeleteWithoutRecovery in conjunction with RecoveryWindowInDays.",
            ));
        }
        if let Some(w) = window
            && !RECOVERY_WINDOW_DAYS.contains(&w)
        {
            return Err(errors::invalid_parameter(format!(
                "The RecoveryWindowInDays value must be between 7 and 30 days (inclusive), not {w}."
            )));
        }
        self.change(c, |body, now| {
            let arn = match self.authorized_arn(c, body, id, "secretsmanager:DeleteSecret") {
                // AWS: a forced delete of a secret that does not exist is not an error.
                Err(e) if force && e.aws_code() == "ResourceNotFoundException" => {
                    return Ok(json!({
                        "ARN": self.arn_for_unknown(id),
                        "Name": id,
                        "DeletionDate": now,
                    }));
                }
                other => other?,
            };
            if force {
                let s = body.secrets.remove(&arn).expect("found above");
                let mut out = arn_name(&s);
                out["DeletionDate"] = now.into();
                return Ok(out);
            }
            let s = body.secrets.get_mut(&arn).expect("found above");
            if s.deletion.is_some() {
                return Err(errors::invalid_request(format!(
                    "secret {arn} is already scheduled for deletion (restore it with RestoreSecret, or delete it at once with ForceDeleteWithoutRecovery)"
                )));
            }
            let date = now + window.unwrap_or(DEFAULT_RECOVERY_WINDOW_DAYS) * DAY;
            s.deletion = Some(Deletion {
                requested: now,
                date,
            });
            s.last_changed = now;
            let mut out = arn_name(s);
            out["DeletionDate"] = date.into();
            Ok(out)
        })
    }

    pub(super) fn restore_secret(&self, c: &Call, r: &Request) -> Result<Value, AwsError> {
        let id = r.required_str("SecretId")?;
        self.change(c, |body, now| {
            let s = self.authorized_mut(c, body, id, "secretsmanager:RestoreSecret")?;
            if s.deletion.take().is_some() {
                s.last_changed = now;
            }
            Ok(arn_name(s))
        })
    }

    pub(super) fn tag_resource(&self, c: &Call, r: &Request) -> Result<Value, AwsError> {
        let id = r.required_str("SecretId")?;
        if !r.has("Tags") {
            return Err(validation("Tags", "is required"));
        }
        let tags = tags_of(r, "Tags")?;
        self.change(c, |body, now| {
            let s = self.live_mut(c, body, id, "secretsmanager:TagResource")?;
            merge_tags(&mut s.tags, tags)?;
            s.last_changed = now;
            Ok(arn_name(s))
        })
        .map(|_| json!({}))
    }

    pub(super) fn untag_resource(&self, c: &Call, r: &Request) -> Result<Value, AwsError> {
        let id = r.required_str("SecretId")?;
        let keys = r
            .strings("TagKeys")?
            .ok_or_else(|| validation("TagKeys", "is required"))?;
        self.change(c, |body, now| {
            let s = self.live_mut(c, body, id, "secretsmanager:UntagResource")?;
            s.tags.retain(|t| !keys.contains(&t.key.as_str()));
            s.last_changed = now;
            Ok(arn_name(s))
        })
        .map(|_| json!({}))
    }
}
