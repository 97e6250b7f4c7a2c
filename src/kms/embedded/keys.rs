//! A key's lifecycle: CreateKey, DescribeKey, ListKeys, EnableKey, DisableKey,
//! ScheduleKeyDeletion and CancelKeyDeletion, and the keystore summary `inspect` shows.

use super::{
    DEFAULT_PENDING_WINDOW_DAYS, DEFAULT_ROTATION_PERIOD_DAYS, EmbeddedKms, PENDING_WINDOW_DAYS,
    checks,
};
use crate::aws::error::{AwsError, Result};
use crate::iam::caller::Caller;
use crate::kms::api::*;
use crate::kms::event::Call;
use crate::kms::ids::{KeyId, KeyRef};
use crate::kms::keystore::Keystore;
use crate::kms::model::*;
use crate::sys::clock::format_time;
/// CreateKey's inputs.
#[derive(Debug, Clone, Default)]
pub struct CreateKeyRequest {
    pub description: String,
    pub tags: Vec<(String, String)>,
    pub policy: Option<String>,
    pub bypass_lockout_check: bool,
    /// `Origin`: AWS_KMS (the default) or AWS_CLOUDHSM (with `custom_key_store_id`).
    pub origin: Option<String>,
    /// The custom key store whose token makes and holds the key's material.
    pub custom_key_store_id: Option<String>,
}

impl EmbeddedKms {
    fn metadata(&self, ks: &Keystore, k: &KeyRecord) -> KeyMetadata {
        let store = k
            .custom_key_store_id
            .as_ref()
            .and_then(|id| ks.body.custom_key_stores.get(id));
        KeyMetadata {
            aws_account_id: self.account.to_string(),
            key_id: k.id.to_string(),
            arn: self.arn(&k.id),
            creation_date: k.created,
            enabled: k.state == KeyState::Enabled,
            description: k.description.clone(),
            key_usage: "ENCRYPT_DECRYPT",
            key_state: k.state.as_str(),
            deletion_date: k.deletion_date,
            pending_deletion_window_in_days: k.pending_window_days,
            origin: if k.custom_key_store_id.is_some() {
                "AWS_CLOUDHSM"
            } else {
                "AWS_KMS"
            },
            key_manager: match k.manager {
                KeyManager::Customer => "CUSTOMER",
                KeyManager::Aws => "AWS",
            },
            customer_master_key_spec: SYMMETRIC_DEFAULT,
            key_spec: SYMMETRIC_DEFAULT,
            encryption_algorithms: vec![SYMMETRIC_DEFAULT],
            multi_region: false,
            current_key_material_id: Some(k.current_version().material_id().to_string()),
            custom_key_store_id: k.custom_key_store_id.clone(),
            cloud_hsm_cluster_id: store.map(|s| s.token.uri()),
        }
    }

    /// CreateKey. `policy`: the key policy text (None: the default policy); `bypass`
    /// skips the lockout safety check, as `--bypass-policy-lockout-safety-check`.
    pub fn create_key(&self, caller: &Caller, req: &CreateKeyRequest) -> Result<KeyMetadata> {
        let mut call = Call::new("CreateKey", false)
            .param("description", req.description.as_str())
            .param("keyUsage", "ENCRYPT_DECRYPT")
            .param("keySpec", SYMMETRIC_DEFAULT)
            .param("bypassPolicyLockoutSafetyCheck", req.bypass_lockout_check);
        if let Some(p) = &req.policy {
            call = call.param("policy", p.as_str());
        }
        if let Some(o) = &req.origin {
            call = call.param("origin", o.as_str());
        }
        if let Some(id) = &req.custom_key_store_id {
            call = call.param("customKeyStoreId", id.as_str());
        }
        if !req.tags.is_empty() {
            call = call.param(
                "tags",
                req.tags
                    .iter()
                    .map(|(k, v)| serde_json::json!({"tagKey": k, "tagValue": v}))
                    .collect::<Vec<_>>(),
            );
        }
        let out = self.create_key_inner(caller, req, &mut call);
        self.finish(caller, call, out)
    }

    fn create_key_inner(
        &self,
        caller: &Caller,
        req: &CreateKeyRequest,
        call: &mut Call,
    ) -> Result<KeyMetadata> {
        let bypass = req.bypass_lockout_check.to_string();
        self.authorize(
            caller,
            "kms:CreateKey",
            None,
            None,
            &[("kms:BypassPolicyLockoutSafetyCheck", &bypass)],
        )?;
        let description = &req.description;
        checks::check_description(description)?;
        let store_id = check_origin(req)?;
        checks::check_tags(&req.tags)?;
        let tag_map: std::collections::BTreeMap<_, _> = req.tags.iter().cloned().collect();
        let id = KeyId::random();
        let mut principals = std::collections::BTreeMap::new();
        if let Some(text) = &req.policy {
            let (p, ids) = self.parse_key_policy(text)?;
            if !req.bypass_lockout_check {
                self.check_lockout(caller, &p, &id)?;
            }
            principals = ids;
        }
        self.mutate(Some(caller), call, |ks, now, call| {
            call.resource(&self.arn(&id));
            let v = match store_id {
                None => ks.new_version(&self.root()?, &id, 1, now, VersionOrigin::Initial),
                Some(sid) => {
                    let store = self.connected_store(ks, sid)?;
                    self.new_token_version(store, &id, 1, now, VersionOrigin::Initial)?
                }
            };
            let rec = KeyRecord {
                id,
                description: description.to_string(),
                created: now,
                state: KeyState::Enabled,
                manager: KeyManager::Customer,
                deletion_date: None,
                pending_window_days: None,
                tags: tag_map,
                rotation: Rotation {
                    enabled: false,
                    period_days: DEFAULT_ROTATION_PERIOD_DAYS,
                    next_rotation: None,
                },
                policy: req.policy.clone(),
                policy_principals: principals,
                versions: vec![v],
                custom_key_store_id: store_id.map(str::to_string),
            };
            let meta = self.metadata(ks, &rec);
            call.respond(serde_json::json!({ "keyMetadata": {
                "keyId": meta.key_id, "arn": meta.arn, "keyState": meta.key_state,
                "keyManager": meta.key_manager, "description": meta.description,
            }}));
            ks.body.keys.insert(id, rec);
            Ok(meta)
        })
    }

    /// Store `id`, which must be CONNECTED (to create a key in it).
    fn connected_store<'a>(&self, ks: &'a Keystore, id: &str) -> Result<&'a CustomKeyStoreRecord> {
        let s = ks
            .body
            .custom_key_stores
            .get(id)
            .ok_or_else(|| AwsError::CustomKeyStoreNotFound { id: id.to_string() })?;
        let problem = match s.connection {
            StoreConnection::Disconnected => Some("DISCONNECTED".to_string()),
            StoreConnection::Connected => self
                .store_token(s)
                .err()
                .map(|e| format!("FAILED ({}: {e})", e.connection_error_code())),
        };
        match problem {
            None => Ok(s),
            Some(p) => Err(AwsError::CustomKeyStore {
                code: "CustomKeyStoreInvalidStateException",
                message: format!(
                    "custom key store {id} is {p}: keys are created only in a CONNECTED store (`cryptvol kms connect-custom-key-store --custom-key-store-id {id}`)"
                ),
            }),
        }
    }

    pub fn describe_key(&self, caller: &Caller, r: &KeyRef) -> Result<KeyMetadata> {
        let mut call = Call::new("DescribeKey", true).param("keyId", r.to_string());
        let out = self.ensure_managed(r).and_then(|()| {
            self.read(|ks, _| {
                let k =
                    self.resolve_authorized(ks, r, caller, &mut call, "kms:DescribeKey", None)?;
                Ok(self.metadata(ks, k))
            })
        });
        self.finish(caller, call, out)
    }

    pub fn list_keys(&self, caller: &Caller) -> Result<ListKeysResponse> {
        let call = Call::new("ListKeys", true);
        let out = self
            .authorize(caller, "kms:ListKeys", None, None, &[])
            .and_then(|()| {
                self.read(|ks, _| {
                    Ok(ListKeysResponse {
                        keys: ks
                            .body
                            .keys
                            .keys()
                            .map(|id| KeyListEntry {
                                key_id: id.to_string(),
                                key_arn: self.arn(id),
                            })
                            .collect(),
                        truncated: false,
                    })
                })
            });
        self.finish(caller, call, out)
    }

    /// A change to one key: resolve, authorize `action`, then `f` under the region lock.
    pub(super) fn change_key<T>(
        &self,
        caller: &Caller,
        mut call: Call,
        r: &KeyRef,
        action: &str,
        f: impl FnOnce(&mut KeyRecord, UnixTime, &mut Call) -> Result<T>,
    ) -> Result<T> {
        let out = self.mutate(Some(caller), &mut call, |ks, now, call| {
            let k = self.resolve_authorized_mut(ks, r, caller, call, action)?;
            f(k, now, call)
        });
        self.finish(caller, call, out)
    }

    pub fn enable_key(&self, caller: &Caller, r: &KeyRef) -> Result<()> {
        let call = Call::new("EnableKey", false).param("keyId", r.to_string());
        self.change_key(caller, call, r, "kms:EnableKey", |k, _, _| {
            self.refuse_managed(k, "enabled or disabled")?;
            if k.state == KeyState::PendingDeletion {
                return Err(self.pending_state_error(k, "EnableKey"));
            }
            k.state = KeyState::Enabled;
            Ok(())
        })
    }

    pub fn disable_key(&self, caller: &Caller, r: &KeyRef) -> Result<()> {
        let call = Call::new("DisableKey", false).param("keyId", r.to_string());
        self.change_key(caller, call, r, "kms:DisableKey", |k, _, _| {
            self.refuse_managed(k, "disabled")?;
            if k.state == KeyState::PendingDeletion {
                return Err(self.pending_state_error(k, "DisableKey"));
            }
            k.state = KeyState::Disabled;
            Ok(())
        })
    }

    pub fn schedule_key_deletion(
        &self,
        caller: &Caller,
        r: &KeyRef,
        pending_window_days: Option<u32>,
    ) -> Result<ScheduleKeyDeletionResponse> {
        let days = pending_window_days.unwrap_or(DEFAULT_PENDING_WINDOW_DAYS);
        let call = Call::new("ScheduleKeyDeletion", false)
            .param("keyId", r.to_string())
            .param("pendingWindowInDays", days);
        self.change_key(
            caller,
            call,
            r,
            "kms:ScheduleKeyDeletion",
            |k, now, call| {
                if !PENDING_WINDOW_DAYS.contains(&days) {
                    return Err(AwsError::validation(
                        "PendingWindowInDays",
                        format!("{days} is outside 7..30"),
                    ));
                }
                self.refuse_managed(k, "deleted")?;
                if k.state == KeyState::PendingDeletion {
                    return Err(self.pending_state_error(k, "ScheduleKeyDeletion"));
                }
                let when = now + days as i64 * DAY;
                k.state = KeyState::PendingDeletion;
                k.deletion_date = Some(when);
                k.pending_window_days = Some(days);
                call.respond(serde_json::json!({
                    "keyId": self.arn(&k.id), "deletionDate": format_time(when),
                    "keyState": "PendingDeletion", "pendingWindowInDays": days,
                }));
                Ok(ScheduleKeyDeletionResponse {
                    key_id: self.arn(&k.id),
                    deletion_date: when,
                    key_state: KeyState::PendingDeletion.as_str(),
                    pending_window_in_days: days,
                })
            },
        )
    }

    /// Cancels a scheduled deletion; the key comes back Disabled, as in AWS.
    pub fn cancel_key_deletion(&self, caller: &Caller, r: &KeyRef) -> Result<KeyIdResponse> {
        let call = Call::new("CancelKeyDeletion", false).param("keyId", r.to_string());
        self.change_key(caller, call, r, "kms:CancelKeyDeletion", |k, _, _| {
            if k.state != KeyState::PendingDeletion {
                return Err(AwsError::InvalidState {
                    key_arn: self.arn(&k.id),
                    state: k.state.as_str().to_string(),
                    operation: "CancelKeyDeletion".into(),
                    hint: " (only a key pending deletion can have its deletion cancelled)".into(),
                });
            }
            k.state = KeyState::Disabled;
            k.deletion_date = None;
            k.pending_window_days = None;
            Ok(KeyIdResponse {
                key_id: self.arn(&k.id),
            })
        })
    }

    /// Keys and aliases without any secret, for `cryptvol inspect keystore`.
    pub fn keystore_summary(&self) -> Result<serde_json::Value> {
        self.read(|ks, _| {
            let mut body = serde_json::to_value(&ks.body).expect("serialises");
            // Sealed material is not secret, but it is noise to a reader: show its length.
            if let Some(keys) = body.get_mut("keys").and_then(|k| k.as_object_mut()) {
                for key in keys.values_mut() {
                    if let Some(vs) = key.get_mut("versions").and_then(|v| v.as_array_mut()) {
                        for v in vs {
                            if v.get("token_object").is_none() {
                                v["sealed"] = serde_json::json!("<60 bytes sealed>");
                            }
                        }
                    }
                }
            }
            // A store's PIN is a secret: never shown.
            if let Some(stores) = body
                .get_mut("custom_key_stores")
                .and_then(|s| s.as_object_mut())
            {
                for store in stores.values_mut() {
                    store["password"] = serde_json::json!("<hidden>");
                }
            }
            Ok(serde_json::json!({
                "generation": ks.generation,
                "body": body,
            }))
        })
    }
}

/// The custom key store a CreateKey names, checked against its `Origin` as AWS does.
fn check_origin(req: &CreateKeyRequest) -> Result<Option<&str>> {
    match (req.origin.as_deref(), req.custom_key_store_id.as_deref()) {
        (None | Some("AWS_KMS"), None) => Ok(None),
        (Some("AWS_CLOUDHSM"), Some(id)) => Ok(Some(id)),
        (Some("AWS_CLOUDHSM"), None) => Err(AwsError::InvalidInput {
            message: "Origin AWS_CLOUDHSM needs a CustomKeyStoreId: name the custom key store that makes the key".into(),
        }),
        (_, Some(_)) => Err(AwsError::InvalidInput {
            message: "a key in a custom key store needs Origin AWS_CLOUDHSM".into(),
        }),
        (Some(o @ ("EXTERNAL" | "EXTERNAL_KEY_STORE")), None) => Err(AwsError::Unsupported {
            message: format!(
                "Origin {o} is not offered: cryptvol keys are made by the KMS (AWS_KMS) or in a PKCS#11 token (AWS_CLOUDHSM)"
            ),
        }),
        (Some(o), None) => Err(AwsError::InvalidInput {
            message: format!(
                "1 validation error detected: Value '{o}' at 'origin' failed to satisfy constraint: Member must satisfy enum value set: [EXTERNAL_KEY_STORE, AWS_CLOUDHSM, AWS_KMS, EXTERNAL]"
            ),
        }),
    }
}
