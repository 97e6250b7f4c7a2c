//! Access keys: an id and a secret, the secret sealed (AES-256-GCM) under the data dir's
//! `iam.key` in `iam.json`, handed out once at creation as AWS does.

use crate::aws::error::{AwsError, Result};
use crate::crypto::{Key256, aead};
use crate::sys::fsio::{self};
use zeroize::Zeroizing;

use super::identity::*;
use super::records::*;
use super::store::*;

impl IdentityStore {
    /// The key sealing access key secrets, made on first use.
    pub(super) fn iam_key(&self) -> Result<Key256> {
        let path = self.files().iam_key_file();
        match std::fs::read(&path) {
            Ok(b) => Key256::from_slice(&b).ok_or_else(|| AwsError::Corrupt {
                path,
                what: format!("{} bytes, not a 32-byte key", b.len()),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let k = Key256::generate();
                match fsio::create_atomic(&path, k.expose(), fsio::PRIVATE_FILE) {
                    Ok(()) => Ok(k),
                    // Another process made it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => self.iam_key(),
                    Err(e) => Err(AwsError::io("cannot create", &path, e)),
                }
            }
            Err(e) => Err(AwsError::io("cannot read", &path, e)),
        }
    }

    /// A new access key for `user`: (AccessKeyId, SecretAccessKey). The secret is shown
    /// once, here; only its sealed form is kept.
    pub fn create_access_key(&self, user: &str) -> Result<serde_json::Value> {
        let key = self.iam_key()?;
        self.mutate(|b, now| {
            let u = b
                .users
                .get_mut(user)
                .ok_or_else(|| no_such(EntityKind::User, user))?;
            if u.access_keys.len() >= MAX_ACCESS_KEYS {
                return Err(AwsError::LimitExceeded {
                    what: format!(
                        "user {user} already has {MAX_ACCESS_KEYS} access keys: delete one with `cryptvol iam delete-access-key`"
                    ),
                });
            }
            let id = unique_id("AKIA").chars().take(20).collect::<String>();
            let secret = zeroize::Zeroizing::new(random_secret());
            let sealed_secret = aead::seal_secret(&key, id.as_bytes(), secret.as_bytes());
            u.access_keys.insert(
                id.clone(),
                AccessKeyRecord {
                    created: now,
                    status: "Active".into(),
                    sealed_secret,
                },
            );
            Ok(serde_json::json!({ "AccessKey": {
                "UserName": user,
                "AccessKeyId": id,
                "Status": "Active",
                "SecretAccessKey": secret.as_str(),
                "CreateDate": iso(now),
            }}))
        })
    }

    pub fn list_access_keys(&self, user: &str) -> Result<Vec<serde_json::Value>> {
        let b = self.load()?;
        let u = b
            .users
            .get(user)
            .ok_or_else(|| no_such(EntityKind::User, user))?;
        Ok(u.access_keys
            .iter()
            .map(|(id, k)| {
                serde_json::json!({
                    "UserName": user, "AccessKeyId": id, "Status": k.status,
                    "CreateDate": iso(k.created),
                })
            })
            .collect())
    }

    pub fn delete_access_key(&self, user: &str, access_key_id: &str) -> Result<()> {
        self.mutate(|b, _| {
            let u = b
                .users
                .get_mut(user)
                .ok_or_else(|| no_such(EntityKind::User, user))?;
            u.access_keys
                .remove(access_key_id)
                .map(|_| ())
                .ok_or_else(|| AwsError::NoSuchEntity {
                    what: format!("access key {access_key_id} of user {user}"),
                    hint: format!(
                        ": list them with `cryptvol iam list-access-keys --user-name {user}`"
                    ),
                })
        })
    }

    /// Sets an access key's status (`Active` or `Inactive`), as IAM's UpdateAccessKey.
    pub fn update_access_key(&self, user: &str, access_key_id: &str, status: &str) -> Result<()> {
        if status != "Active" && status != "Inactive" {
            return Err(AwsError::validation(
                "status",
                format!("'{status}' is not Active or Inactive"),
            ));
        }
        self.mutate(|b, _| {
            let u = b
                .users
                .get_mut(user)
                .ok_or_else(|| no_such(EntityKind::User, user))?;
            let k = u
                .access_keys
                .get_mut(access_key_id)
                .ok_or_else(|| AwsError::NoSuchEntity {
                    what: format!("access key {access_key_id} of user {user}"),
                    hint: format!(
                        ": list them with `cryptvol iam list-access-keys --user-name {user}`"
                    ),
                })?;
            k.status = status.to_string();
            Ok(())
        })
    }

    /// Every active access key with its owner and secret (for the KMS server, which keeps
    /// them in memory and re-reads them when iam.json changes).
    pub fn access_keys(
        &self,
        body: &IdentityBody,
    ) -> Result<Vec<(String, Identity, Zeroizing<String>)>> {
        if body.users.values().all(|u| u.access_keys.is_empty()) {
            return Ok(Vec::new());
        }
        let key = self.iam_key()?;
        let mut out = Vec::new();
        for (name, u) in &body.users {
            for (id, k) in u.access_keys.iter().filter(|(_, k)| k.status == "Active") {
                let secret = aead::open_secret(&key, id.as_bytes(), &k.sealed_secret).map_err(|_| {
                    AwsError::Corrupt {
                        path: self.path(),
                        what: format!(
                            "the secret of access key {id} does not open with {}: restore the data dir's original iam.key",
                            self.files().iam_key_file().display()
                        ),
                    }
                })?;
                let secret = Zeroizing::new(String::from_utf8_lossy(secret.expose()).into_owned());
                out.push((
                    id.clone(),
                    self.identity_of(body, EntityKind::User, name)?,
                    secret,
                ));
            }
        }
        Ok(out)
    }
}

/// A 40-character secret access key (base64 of 30 random bytes, as AWS's look).
pub(super) fn random_secret() -> String {
    let mut b = [0u8; 30];
    crate::crypto::random::fill(&mut b);
    let s = crate::aws::b64::encode(&b);
    zeroize::Zeroize::zeroize(&mut b);
    s
}
