//! A secret's versions and their staging labels: GetSecretValue, PutSecretValue,
//! ListSecretVersionIds, UpdateSecretVersionStage.
//!
//! Each label is on at most one version. Moving AWSCURRENT puts AWSPREVIOUS on the version
//! it left; the first version of a secret is always AWSCURRENT. A version with no label is
//! deprecated; beyond [`MAX_DEPRECATED`] of them the oldest that are more than a day old
//! are dropped, as AWS does. A version's id is the request's ClientRequestToken,
//! and a retry with the same token and value changes nothing.

use serde_json::{Value, json};

use super::envelope::{self, Plain};
use super::errors::{self, validation};
use super::lifecycle::{arn_name, times, value_of};
use super::listing::page;
use super::model::{AWSCURRENT, AWSPREVIOUS, SecretRecord, StoreBody, VersionRecord};
use super::request::Request;
use super::{Call, SecretsManager};
use crate::aws::AwsError;
use crate::kms::model::DAY;

pub const MAX_DEPRECATED: usize = 100;
pub const MAX_STAGES_PER_VERSION: usize = 20;

fn check_stage(stage: &str) -> Result<(), AwsError> {
    let n = stage.chars().count();
    if (1..=256).contains(&n) && !stage.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(validation(
            "VersionStage",
            format!("'{stage}' must be 1 to 256 characters"),
        ))
    }
}

/// Puts `stage` on version `vid` alone; AWSCURRENT leaves AWSPREVIOUS where it was.
fn attach_stage(s: &mut SecretRecord, stage: &str, vid: &str) -> Result<(), AwsError> {
    let previous = s
        .version_with(stage)
        .map(|(id, _)| id.clone())
        .filter(|id| id != vid);
    for v in s.versions.values_mut() {
        v.stages.retain(|x| x != stage);
    }
    if stage == AWSCURRENT
        && let Some(prev) = &previous
    {
        for v in s.versions.values_mut() {
            v.stages.retain(|x| x != AWSPREVIOUS);
        }
        if let Some(p) = s.versions.get_mut(prev) {
            p.stages.push(AWSPREVIOUS.to_string());
        }
    }
    let v = s.versions.get_mut(vid).ok_or_else(|| {
        errors::invalid_parameter(format!("version {vid} of secret {} does not exist", s.arn))
    })?;
    v.stages.push(stage.to_string());
    if v.stages.len() > MAX_STAGES_PER_VERSION {
        return Err(errors::limit(format!(
            "a version has at most {MAX_STAGES_PER_VERSION} staging labels"
        )));
    }
    Ok(())
}

/// Drops the oldest deprecated (unlabelled) versions beyond [`MAX_DEPRECATED`]; a version
/// less than a day old is kept, as AWS keeps it.
fn drop_old_deprecated(s: &mut SecretRecord, now: i64) {
    let mut deprecated: Vec<(u64, String)> = s
        .versions
        .iter()
        .filter(|(_, v)| v.stages.is_empty() && v.created <= now - DAY)
        .map(|(id, v)| (v.seq, id.clone()))
        .collect();
    if deprecated.len() <= MAX_DEPRECATED {
        return;
    }
    deprecated.sort();
    let excess = deprecated.len() - MAX_DEPRECATED;
    for (_, id) in deprecated.into_iter().take(excess) {
        s.versions.remove(&id);
    }
}

fn midnight(t: i64) -> i64 {
    t - t.rem_euclid(DAY)
}

impl SecretsManager {
    /// Adds version `vid` with `value` to `s` and puts `stages` on it; a version of that id
    /// with the same value is left as it is (an idempotent retry), with another value it
    /// is refused.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add_version(
        &self,
        c: &Call,
        body: &mut StoreBody,
        s: &mut SecretRecord,
        vid: &str,
        value: &Plain,
        stages: &[&str],
        now: i64,
    ) -> Result<(), AwsError> {
        if let Some(existing) = s.versions.get(vid) {
            return if existing.sealed.digest == envelope::digest(&self.store_key, value) {
                Ok(())
            } else {
                Err(errors::exists(format!(
                    "A version with VersionId {vid} already exists in secret {} with another value: you can't modify an existing version, only create a new one (use another ClientRequestToken)",
                    s.arn
                )))
            };
        }
        let sealed = envelope::seal(
            &self.kms,
            c.caller,
            s.kms_key_id.as_deref(),
            &s.arn,
            vid,
            value,
            &self.store_key,
        )?;
        s.versions.insert(
            vid.to_string(),
            VersionRecord {
                seq: body.next_seq,
                created: now,
                stages: Vec::new(),
                last_accessed: None,
                sealed,
            },
        );
        body.next_seq += 1;
        // The first version of a secret is AWSCURRENT whatever else it is given.
        if s.version_with(AWSCURRENT).is_none() && !stages.contains(&AWSCURRENT) {
            attach_stage(s, AWSCURRENT, vid)?;
        }
        for stage in stages {
            attach_stage(s, stage, vid)?;
        }
        drop_old_deprecated(s, now);
        Ok(())
    }

    pub(super) fn get_secret_value(&self, c: &Call, r: &Request) -> Result<Value, AwsError> {
        let id = r.required_str("SecretId")?;
        let version_id = r.str_len("VersionId", 32, 64)?;
        let stage = r.str_len("VersionStage", 1, 256)?;
        let body = self.load()?;
        let s = self.authorized(c, &body, id, "secretsmanager:GetSecretValue")?;
        if s.deletion.is_some() {
            return Err(errors::marked_for_deletion(&s.arn));
        }
        let (vid, v) = match (version_id, stage) {
            (Some(vid), _) => {
                let v = s
                    .versions
                    .get_key_value(vid)
                    .ok_or_else(|| errors::no_version(&s.arn, &format!("VersionId {vid}")))?;
                if let Some(st) = stage
                    && !v.1.stages.iter().any(|x| x == st)
                {
                    return Err(errors::no_version(
                        &s.arn,
                        &format!("VersionId {vid} with staging label {st}"),
                    ));
                }
                v
            }
            (None, st) => {
                let st = st.unwrap_or(AWSCURRENT);
                s.version_with(st)
                    .ok_or_else(|| errors::no_version(&s.arn, &format!("staging label {st}")))?
            }
        };
        let plain = envelope::open(&self.kms, c.caller, &s.arn, vid, &v.sealed)?;
        let mut out = arn_name(s);
        out["VersionId"] = vid.clone().into();
        out["VersionStages"] = json!(v.stages);
        out["CreatedDate"] = v.created.into();
        if plain.binary {
            out["SecretBinary"] = crate::aws::b64::encode(plain.bytes.expose()).into();
        } else {
            let text = String::from_utf8(plain.bytes.expose().to_vec()).map_err(|_| {
                errors::invalid_request(format!("the value of secret {} is not UTF-8", s.arn))
            })?;
            out["SecretString"] = text.into();
        }
        self.note_access(s, vid)?;
        Ok(out)
    }

    /// LastAccessedDate, kept to the day as AWS keeps it: written once a day at most.
    /// `s` is the secret as the read found it, so a fresh date costs no second load.
    fn note_access(&self, s: &SecretRecord, vid: &str) -> Result<(), AwsError> {
        let today = midnight(self.now());
        let fresh = s.last_accessed == Some(today)
            && s.versions
                .get(vid)
                .is_some_and(|v| v.last_accessed == Some(today));
        if fresh {
            return Ok(());
        }
        self.store.mutate(self.now(), |body| {
            if let Some(s) = body.secrets.get_mut(&s.arn) {
                s.last_accessed = Some(today);
                if let Some(v) = s.versions.get_mut(vid) {
                    v.last_accessed = Some(today);
                }
            }
            Ok(())
        })
    }

    pub(super) fn put_secret_value(&self, c: &Call, r: &Request) -> Result<Value, AwsError> {
        let id = r.required_str("SecretId")?;
        let token = r.str_len("ClientRequestToken", 32, 64)?;
        let value = value_of(r)?.ok_or_else(|| {
            errors::invalid_parameter("You must provide either SecretString or SecretBinary.")
        })?;
        let stages: Vec<&str> = r
            .strings("VersionStages")?
            .unwrap_or_else(|| vec![AWSCURRENT]);
        if stages.is_empty() || stages.len() > MAX_STAGES_PER_VERSION {
            return Err(validation(
                "VersionStages",
                format!(
                    "must list 1 to {MAX_STAGES_PER_VERSION} labels, not {}",
                    stages.len()
                ),
            ));
        }
        for s in &stages {
            check_stage(s)?;
        }
        self.change(c, |body, now| {
            let arn = self.authorized_arn(c, body, id, "secretsmanager:PutSecretValue")?;
            let mut s = body.secrets[&arn].clone();
            if s.deletion.is_some() {
                return Err(errors::marked_for_deletion(&arn));
            }
            let vid = token
                .map(str::to_string)
                .unwrap_or_else(crate::kms::event::fast_uuid);
            self.add_version(c, body, &mut s, &vid, &value, &stages, now)?;
            s.last_changed = now;
            let mut out = arn_name(&s);
            out["VersionId"] = vid.clone().into();
            out["VersionStages"] = json!(s.versions[&vid].stages);
            body.secrets.insert(arn, s);
            Ok(out)
        })
    }

    pub(super) fn list_secret_version_ids(&self, c: &Call, r: &Request) -> Result<Value, AwsError> {
        let id = r.required_str("SecretId")?;
        let max = r.int("MaxResults", 1, 100)?;
        let token = r.str("NextToken")?;
        let deprecated = r.bool("IncludeDeprecated")?.unwrap_or(false);
        let body = self.load()?;
        let s = self.authorized(c, &body, id, "secretsmanager:ListSecretVersionIds")?;
        let items: Vec<(String, Value)> = s
            .versions_newest_first()
            .into_iter()
            .filter(|(_, v)| deprecated || !v.stages.is_empty())
            .map(|(vid, v)| {
                let mut e = json!({
                    "VersionId": vid,
                    "VersionStages": v.stages,
                    "CreatedDate": v.created,
                    "KmsKeyIds": [v.sealed.kms_key_arn],
                });
                if let Some(t) = v.last_accessed {
                    e["LastAccessedDate"] = times(Some(t));
                }
                (format!("{:020}", v.seq), e)
            })
            .collect();
        let kind = format!("versions {} {deprecated}", s.arn);
        let (items, next) = page(&kind, true, items, max, token)?;
        let mut out = arn_name(s);
        out["Versions"] = Value::Array(items);
        if let Some(n) = next {
            out["NextToken"] = n.into();
        }
        Ok(out)
    }

    pub(super) fn update_secret_version_stage(
        &self,
        c: &Call,
        r: &Request,
    ) -> Result<Value, AwsError> {
        let id = r.required_str("SecretId")?;
        let stage = r.required_str("VersionStage")?;
        check_stage(stage)?;
        let remove_from = r.str_len("RemoveFromVersionId", 32, 64)?;
        let move_to = r.str_len("MoveToVersionId", 32, 64)?;
        self.change(c, |body, now| {
            let arn =
                self.authorized_arn(c, body, id, "secretsmanager:UpdateSecretVersionStage")?;
            let mut s = body.secrets[&arn].clone();
            if s.deletion.is_some() {
                return Err(errors::marked_for_deletion(&arn));
            }
            let holder = s.version_with(stage).map(|(id, _)| id.clone());
            for vid in [remove_from, move_to].into_iter().flatten() {
                if !s.versions.contains_key(vid) {
                    return Err(errors::invalid_parameter(format!(
                        "version {vid} of secret {arn} does not exist"
                    )));
                }
            }
            if let Some(from) = remove_from
                && holder.as_deref() != Some(from)
            {
                return Err(errors::invalid_parameter(format!(
                    "The staging label {stage} is not attached to version {from} of secret {arn}{}",
                    holder
                        .as_ref()
                        .map(|h| format!(" (it is on version {h})"))
                        .unwrap_or_default()
                )));
            }
            match move_to {
                Some(to) => {
                    if let Some(h) = &holder
                        && h != to
                        && remove_from.is_none()
                    {
                        return Err(errors::invalid_parameter(format!(
                            "The staging label {stage} is currently attached to version {h}, so you must explicitly reference that version in RemoveFromVersionId."
                        )));
                    }
                    attach_stage(&mut s, stage, to)?;
                }
                None => {
                    if remove_from.is_none() {
                        return Err(errors::invalid_parameter(
                            "give MoveToVersionId, RemoveFromVersionId or both",
                        ));
                    }
                    if stage == AWSCURRENT {
                        return Err(errors::invalid_parameter(format!(
                            "You can't remove the staging label AWSCURRENT from version {} of secret {arn}: move it to another version with MoveToVersionId",
                            remove_from.unwrap_or_default()
                        )));
                    }
                    for v in s.versions.values_mut() {
                        v.stages.retain(|x| x != stage);
                    }
                }
            }
            drop_old_deprecated(&mut s, now);
            s.last_changed = now;
            let out = arn_name(&s);
            body.secrets.insert(arn, s);
            Ok(out)
        })
    }
}
