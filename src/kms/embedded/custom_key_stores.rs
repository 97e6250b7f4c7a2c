//! Custom key stores (AWS's AWS_CLOUDHSM type): CreateCustomKeyStore,
//! DescribeCustomKeyStores, UpdateCustomKeyStore, DeleteCustomKeyStore,
//! ConnectCustomKeyStore and DisconnectCustomKeyStore.
//!
//! A store is a PKCS#11 token (module and token label or slot, given as a `pkcs11:` URI
//! in AWS's `CloudHsmClusterId`) and its crypto user's PIN (AWS's `KeyStorePassword`). The
//! connection rules are AWS's: keys are created and used only while the store is
//! CONNECTED; its password and token change, and it is deleted, only while DISCONNECTED;
//! a FAILED store (connected, but its token cannot be reached now) must be disconnected
//! before it is connected again. Connecting answers at once, as AWS does: a token that
//! cannot be reached leaves the store FAILED with AWS's `ConnectionErrorCode`.

use serde_json::{Value, json};

use super::EmbeddedKms;
use super::paging::{Listing, Paging, page_json};
use crate::aws::error::{AwsError, Result};
use crate::hsm::uri::redact;
use crate::hsm::{HsmError, ObjectRef, TokenSpec, slots};
use crate::iam::caller::Caller;
use crate::kms::api::CustomKeyStoresListEntry;
use crate::kms::event::Call;
use crate::kms::keystore::Keystore;
use crate::kms::model::*;

/// AWS's quota of custom key stores per account and region.
pub const MAX_CUSTOM_KEY_STORES: usize = 10;
/// AWS's bounds on `KeyStorePassword` (the crypto user's password).
const PASSWORD_LEN: std::ops::RangeInclusive<usize> = 7..=32;

/// CreateCustomKeyStore's inputs.
#[derive(Debug, Default)]
pub struct CreateCustomKeyStoreRequest {
    pub name: String,
    /// `CustomKeyStoreType`: AWS_CLOUDHSM (the default) is the one offered.
    pub store_type: Option<String>,
    /// `CloudHsmClusterId`: the token as a `pkcs11:` URI with its `module-path`.
    pub cluster: Option<String>,
    pub password: Option<StorePassword>,
    /// `TrustAnchorCertificate`: accepted, not used (a local module has no TLS).
    pub trust_anchor_certificate: Option<String>,
}

/// UpdateCustomKeyStore's inputs.
#[derive(Debug, Default)]
pub struct UpdateCustomKeyStoreRequest {
    pub id: String,
    pub new_name: Option<String>,
    pub cluster: Option<String>,
    pub password: Option<StorePassword>,
}

fn store_error(code: &'static str, message: String) -> AwsError {
    AwsError::CustomKeyStore { code, message }
}

fn invalid_state(message: String) -> AwsError {
    store_error("CustomKeyStoreInvalidStateException", message)
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.chars().count() > 256 {
        return Err(AwsError::InvalidInput {
            message: format!(
                "1 validation error detected: Value '{}' at 'customKeyStoreName' failed to satisfy constraint: Member must have length between 1 and 256",
                name.chars().take(300).collect::<String>().escape_debug()
            ),
        });
    }
    Ok(())
}

fn check_password(p: &StorePassword) -> Result<()> {
    let n = p.char_len();
    if !PASSWORD_LEN.contains(&n) {
        return Err(AwsError::InvalidInput {
            message: format!(
                "1 validation error detected: Value at 'keyStorePassword' failed to satisfy constraint: Member must have length between 7 and 32 (it has {n})"
            ),
        });
    }
    Ok(())
}

/// The token a `CloudHsmClusterId` names, if its module may be loaded and holds it.
fn token_of(cluster: &str) -> Result<TokenSpec> {
    let spec = TokenSpec::from_uri(cluster).map_err(|e| AwsError::InvalidInput {
        message: format!(
            "CloudHsmClusterId: {e} (cryptvol names a token as pkcs11:token=LABEL?module-path=/path/to/module.so)"
        ),
    })?;
    slots::probe(&spec).map_err(|e| {
        store_error(
            "CloudHsmClusterNotFoundException",
            format!("the token {} cannot be used: {e}", redact(cluster)),
        )
    })?;
    Ok(spec)
}

/// Whether two specs name the same token (modules compared after resolving symlinks). A
/// label and a slot id can name one token, so different selectors are compared by the
/// tokens' serial numbers when both can be reached.
fn same_token(a: &TokenSpec, b: &TokenSpec) -> bool {
    let real = |s: &TokenSpec| s.module.canonicalize().unwrap_or_else(|_| s.module.clone());
    if real(a) != real(b) {
        return false;
    }
    if a.token == b.token {
        return true;
    }
    matches!((slots::serial(a), slots::serial(b)), (Ok(x), Ok(y)) if x == y)
}

fn new_store_id() -> String {
    let hex = hex::encode(crate::crypto::random::array::<9>());
    format!("cks-{}", &hex[..17])
}

fn store_mut<'a>(ks: &'a mut Keystore, id: &str) -> Result<&'a mut CustomKeyStoreRecord> {
    ks.body
        .custom_key_stores
        .get_mut(id)
        .ok_or_else(|| AwsError::CustomKeyStoreNotFound { id: id.to_string() })
}

impl EmbeddedKms {
    pub fn create_custom_key_store(
        &self,
        caller: &Caller,
        req: &CreateCustomKeyStoreRequest,
    ) -> Result<String> {
        let mut call = Call::new("CreateCustomKeyStore", false)
            .param("customKeyStoreName", req.name.as_str())
            .param(
                "customKeyStoreType",
                req.store_type.as_deref().unwrap_or("AWS_CLOUDHSM"),
            );
        if let Some(c) = &req.cluster {
            // A URI may carry a PIN (pin-value, refused below): never in the audit trail.
            call = call.param("cloudHsmClusterId", redact(c));
        }
        let checked = self
            .authorize(caller, "kms:CreateCustomKeyStore", None, None, &[])
            .and_then(|()| self.check_create(req));
        let out = match checked {
            Err(e) => Err(e),
            Ok(spec) => self.mutate(Some(caller), &mut call, |ks, now, call| {
                let stores = &ks.body.custom_key_stores;
                if stores.values().any(|s| s.name == req.name) {
                    return Err(store_error(
                        "CustomKeyStoreNameInUseException",
                        format!(
                            "a custom key store named {:?} already exists: choose another name",
                            req.name
                        ),
                    ));
                }
                if let Some(other) = stores.values().find(|s| same_token(&s.token, &spec)) {
                    return Err(store_error(
                        "CloudHsmClusterInUseException",
                        format!(
                            "token {} already backs custom key store {}: a token backs one store",
                            spec, other.id
                        ),
                    ));
                }
                if stores.len() >= MAX_CUSTOM_KEY_STORES {
                    return Err(AwsError::LimitExceeded {
                        what: format!(
                            "{MAX_CUSTOM_KEY_STORES} custom key stores per region (delete one first)"
                        ),
                    });
                }
                let id = new_store_id();
                ks.body.custom_key_stores.insert(
                    id.clone(),
                    CustomKeyStoreRecord {
                        id: id.clone(),
                        name: req.name.clone(),
                        created: now,
                        token: spec,
                        password: req.password.clone().expect("checked"),
                        connection: StoreConnection::Disconnected,
                        epoch: 0,
                        objects_to_destroy: Vec::new(),
                    },
                );
                call.respond(json!({ "customKeyStoreId": id }));
                Ok(id)
            }),
        };
        self.finish(caller, call, out)
    }

    fn check_create(&self, req: &CreateCustomKeyStoreRequest) -> Result<TokenSpec> {
        check_name(&req.name)?;
        match req.store_type.as_deref() {
            None | Some("AWS_CLOUDHSM") => {}
            Some("EXTERNAL_KEY_STORE") => {
                return Err(AwsError::Unsupported {
                    message: "external key stores (XKS) are not offered: use an AWS_CLOUDHSM store, whose keys live in a PKCS#11 token".into(),
                });
            }
            Some(other) => {
                return Err(AwsError::InvalidInput {
                    message: format!(
                        "1 validation error detected: Value '{other}' at 'customKeyStoreType' failed to satisfy constraint: Member must satisfy enum value set: [EXTERNAL_KEY_STORE, AWS_CLOUDHSM]"
                    ),
                });
            }
        }
        let password = req.password.as_ref().ok_or_else(|| AwsError::InvalidInput {
            message: "KeyStorePassword is required for an AWS_CLOUDHSM key store: give the token's crypto user PIN".into(),
        })?;
        check_password(password)?;
        let cluster = req.cluster.as_deref().ok_or_else(|| AwsError::InvalidInput {
            message: "CloudHsmClusterId is required for an AWS_CLOUDHSM key store: give the token as pkcs11:token=LABEL?module-path=/path/to/module.so".into(),
        })?;
        token_of(cluster)
    }

    /// The store as DescribeCustomKeyStores shows it; a connected store's token is
    /// reached (connecting on first use) to tell CONNECTED from FAILED.
    fn list_entry(&self, s: &CustomKeyStoreRecord) -> CustomKeyStoresListEntry {
        let failure = match s.connection {
            StoreConnection::Disconnected => None,
            StoreConnection::Connected => self.store_token(s).err(),
        };
        CustomKeyStoresListEntry {
            custom_key_store_id: s.id.clone(),
            custom_key_store_name: s.name.clone(),
            cloud_hsm_cluster_id: s.token.uri(),
            custom_key_store_type: "AWS_CLOUDHSM",
            connection_state: match (s.connection, &failure) {
                (StoreConnection::Disconnected, _) => "DISCONNECTED",
                (StoreConnection::Connected, None) => "CONNECTED",
                (StoreConnection::Connected, Some(_)) => "FAILED",
            },
            connection_error_code: failure.as_ref().map(HsmError::connection_error_code),
            creation_date: s.created,
            problem: failure.map(|e| e.to_string()),
        }
    }

    /// DescribeCustomKeyStores: all stores, or the one with this id or name.
    pub fn describe_custom_key_stores(
        &self,
        caller: &Caller,
        id: Option<&str>,
        name: Option<&str>,
        p: &Paging,
    ) -> Result<(Vec<CustomKeyStoresListEntry>, Value)> {
        let mut call = Self::paged_call("DescribeCustomKeyStores", p);
        if let Some(id) = id {
            call = call.param("customKeyStoreId", id);
        }
        if let Some(n) = name {
            call = call.param("customKeyStoreName", n);
        }
        let out = self
            .authorize(caller, "kms:DescribeCustomKeyStores", None, None, &[])
            .and_then(|()| {
                if id.is_some() && name.is_some() {
                    return Err(AwsError::InvalidInput {
                        message: "give CustomKeyStoreId or CustomKeyStoreName, not both".into(),
                    });
                }
                self.read(|ks, _| {
                    let stores: Vec<&CustomKeyStoreRecord> = ks
                        .body
                        .custom_key_stores
                        .values()
                        .filter(|s| id.is_none_or(|i| s.id == i))
                        .filter(|s| name.is_none_or(|n| s.name == n))
                        .collect();
                    if stores.is_empty() && (id.is_some() || name.is_some()) {
                        let what = id.or(name).unwrap_or_default();
                        return Err(AwsError::CustomKeyStoreNotFound {
                            id: what.to_string(),
                        });
                    }
                    let items = stores
                        .into_iter()
                        .map(|s| (s.id.clone(), self.list_entry(s)))
                        .collect();
                    let page = self.cut(Listing::CustomKeyStores, "", items, p)?;
                    let json_page = super::paging::Page {
                        items: page
                            .items
                            .iter()
                            .map(|e| serde_json::to_value(e).expect("serialises"))
                            .collect(),
                        next_marker: page.next_marker,
                    };
                    Ok((page.items, page_json("CustomKeyStores", json_page)))
                })
            });
        self.finish(caller, call, out)
    }

    /// ConnectCustomKeyStore. Succeeds on a DISCONNECTED or CONNECTED store; the store is
    /// then CONNECTED or, if its token cannot be reached, FAILED.
    pub fn connect_custom_key_store(&self, caller: &Caller, id: &str) -> Result<()> {
        let mut call = Call::new("ConnectCustomKeyStore", false).param("customKeyStoreId", id);
        let out = self
            .authorize(caller, "kms:ConnectCustomKeyStore", None, None, &[])
            .and_then(|()| {
                self.mutate(Some(caller), &mut call, |ks, _, _| {
                    let s = store_mut(ks, id)?;
                    if s.connection == StoreConnection::Connected {
                        return match self.store_token(s) {
                            Ok(_) => Ok(()),
                            Err(e) => Err(invalid_state(format!(
                                "custom key store {id} is FAILED ({}: {e}): disconnect it with `cryptvol kms disconnect-custom-key-store --custom-key-store-id {id}`, fix the token, then connect it",
                                e.connection_error_code()
                            ))),
                        };
                    }
                    s.connection = StoreConnection::Connected;
                    s.epoch += 1;
                    let leftovers = std::mem::take(&mut s.objects_to_destroy);
                    self.destroy_token_objects(s, leftovers);
                    Ok(())
                })
            });
        self.finish(caller, call, out)
    }

    /// DisconnectCustomKeyStore: its keys cannot be used until it is connected again.
    pub fn disconnect_custom_key_store(&self, caller: &Caller, id: &str) -> Result<()> {
        let mut call = Call::new("DisconnectCustomKeyStore", false).param("customKeyStoreId", id);
        let out = self
            .authorize(caller, "kms:DisconnectCustomKeyStore", None, None, &[])
            .and_then(|()| {
                self.mutate(Some(caller), &mut call, |ks, _, _| {
                    let s = store_mut(ks, id)?;
                    if s.connection == StoreConnection::Disconnected {
                        return Err(invalid_state(format!(
                            "custom key store {id} is already DISCONNECTED"
                        )));
                    }
                    s.connection = StoreConnection::Disconnected;
                    s.epoch += 1;
                    Ok(())
                })
            });
        if out.is_ok() {
            self.tokens.drop_store(id);
        }
        self.finish(caller, call, out)
    }

    /// UpdateCustomKeyStore: a new name at any time; a new password or token only while
    /// DISCONNECTED, and a new token only if it holds the objects of the store's keys.
    pub fn update_custom_key_store(
        &self,
        caller: &Caller,
        req: &UpdateCustomKeyStoreRequest,
    ) -> Result<()> {
        let mut call =
            Call::new("UpdateCustomKeyStore", false).param("customKeyStoreId", req.id.as_str());
        if let Some(n) = &req.new_name {
            call = call.param("newCustomKeyStoreName", n.as_str());
        }
        if let Some(c) = &req.cluster {
            // As in create: a PIN in the URI never reaches the audit trail.
            call = call.param("cloudHsmClusterId", redact(c));
        }
        let checked = self
            .authorize(caller, "kms:UpdateCustomKeyStore", None, None, &[])
            .and_then(|()| {
                if let Some(n) = &req.new_name {
                    check_name(n)?;
                }
                if let Some(p) = &req.password {
                    check_password(p)?;
                }
                req.cluster.as_deref().map(token_of).transpose()
            });
        let out = match checked {
            Err(e) => Err(e),
            Ok(spec) => self.mutate(Some(caller), &mut call, |ks, _, _| {
                self.apply_update(ks, req, spec)
            }),
        };
        if out.is_ok() {
            self.tokens.drop_store(&req.id);
        }
        self.finish(caller, call, out)
    }

    fn apply_update(
        &self,
        ks: &mut Keystore,
        req: &UpdateCustomKeyStoreRequest,
        spec: Option<TokenSpec>,
    ) -> Result<()> {
        let id = req.id.as_str();
        let others = ks.body.custom_key_stores.values().filter(|s| s.id != id);
        if let Some(n) = &req.new_name
            && others.clone().any(|s| &s.name == n)
        {
            return Err(store_error(
                "CustomKeyStoreNameInUseException",
                format!("a custom key store named {n:?} already exists: choose another name"),
            ));
        }
        if let Some(spec) = &spec
            && let Some(other) = others.clone().find(|s| same_token(&s.token, spec))
        {
            return Err(store_error(
                "CloudHsmClusterInUseException",
                format!("token {spec} already backs custom key store {}", other.id),
            ));
        }
        let objects: Vec<String> = ks
            .body
            .keys
            .values()
            .filter(|k| k.custom_key_store_id.as_deref() == Some(id))
            .flat_map(|k| k.versions.iter().filter_map(|v| v.token_object.clone()))
            .collect();
        let s = store_mut(ks, id)?;
        if (spec.is_some() || req.password.is_some())
            && s.connection != StoreConnection::Disconnected
        {
            return Err(invalid_state(format!(
                "custom key store {id} must be DISCONNECTED to change its password or token: run `cryptvol kms disconnect-custom-key-store --custom-key-store-id {id}` first"
            )));
        }
        // AWS renames a store that is not DISCONNECTED only while it is CONNECTED: a FAILED
        // one is disconnected first.
        if req.new_name.is_some()
            && s.connection == StoreConnection::Connected
            && let Err(e) = self.store_token(s)
        {
            return Err(invalid_state(format!(
                "custom key store {id} is FAILED ({}: {e}): rename it once it is CONNECTED, or disconnect it first",
                e.connection_error_code()
            )));
        }
        if let Some(spec) = &spec
            && !objects.is_empty()
        {
            let pin = req.password.as_ref().unwrap_or(&s.password).auth_pin();
            let related = crate::hsm::Token::connect(spec, &pin).and_then(|t| {
                let found = objects.iter().try_fold(true, |all, h| {
                    let id = hex::decode(h).unwrap_or_default();
                    Ok::<bool, HsmError>(all && t.exists(&ObjectRef::Id(id))?)
                });
                drop(t);
                found
            });
            match related {
                Ok(true) => {}
                Ok(false) => {
                    return Err(store_error(
                        "CloudHsmClusterNotRelatedException",
                        format!(
                            "token {spec} does not hold the key objects of custom key store {id}: give a token that does (a copy of the store's token)"
                        ),
                    ));
                }
                Err(e) => {
                    return Err(store_error(
                        "CloudHsmClusterInvalidConfigurationException",
                        format!("token {spec} cannot be checked for the store's key objects: {e}"),
                    ));
                }
            }
        }
        if let Some(n) = &req.new_name {
            s.name = n.clone();
        }
        if let Some(spec) = spec {
            s.token = spec;
            s.epoch += 1;
        }
        if let Some(p) = &req.password {
            s.password = p.clone();
            s.epoch += 1;
        }
        Ok(())
    }

    /// DeleteCustomKeyStore: only a DISCONNECTED store without keys (in any state) and
    /// without key objects still to destroy.
    pub fn delete_custom_key_store(&self, caller: &Caller, id: &str) -> Result<()> {
        let mut call = Call::new("DeleteCustomKeyStore", false).param("customKeyStoreId", id);
        let out = self
            .authorize(caller, "kms:DeleteCustomKeyStore", None, None, &[])
            .and_then(|()| {
                self.mutate(Some(caller), &mut call, |ks, _, _| {
                    let keys = ks
                        .body
                        .keys
                        .values()
                        .filter(|k| k.custom_key_store_id.as_deref() == Some(id))
                        .count();
                    let s = store_mut(ks, id)?;
                    if s.connection != StoreConnection::Disconnected {
                        return Err(invalid_state(format!(
                            "custom key store {id} must be DISCONNECTED to be deleted: run `cryptvol kms disconnect-custom-key-store --custom-key-store-id {id}` first"
                        )));
                    }
                    if keys > 0 {
                        return Err(store_error(
                            "CustomKeyStoreHasCMKsException",
                            format!(
                                "custom key store {id} still has {keys} key(s): schedule their deletion and wait for it to complete"
                            ),
                        ));
                    }
                    if !s.objects_to_destroy.is_empty() {
                        return Err(invalid_state(format!(
                            "custom key store {id} has {} object(s) of deleted keys still in its token: connect it once so they are destroyed",
                            s.objects_to_destroy.len()
                        )));
                    }
                    ks.body.custom_key_stores.remove(id);
                    Ok(())
                })
            });
        if out.is_ok() {
            self.tokens.drop_store(id);
            self.forget_refusal(id);
        }
        self.finish(caller, call, out)
    }

    /// Random bytes from a connected store's token (GenerateRandom with a store id).
    pub(super) fn store_random(&self, id: &str, n: usize) -> Result<crate::crypto::SecretBytes> {
        self.read(|ks, _| {
            let s = ks
                .body
                .custom_key_stores
                .get(id)
                .ok_or_else(|| AwsError::CustomKeyStoreNotFound { id: id.to_string() })?;
            let token = match s.connection {
                StoreConnection::Disconnected => None,
                StoreConnection::Connected => self.store_token(s).ok(),
            };
            let token = token.ok_or_else(|| {
                invalid_state(format!(
                    "custom key store {id} is not connected: connect it with `cryptvol kms connect-custom-key-store --custom-key-store-id {id}`"
                ))
            })?;
            token.random(n).map_err(|e| {
                invalid_state(format!("custom key store {id} gave no random bytes: {e}"))
            })
        })
    }
}
