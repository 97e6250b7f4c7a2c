//! The embedded KMS: every KMS operation of one region, served from its keystore file.
//!
//! Reads use an in-memory copy of the keystore, reloaded when the file changes under us
//! (another process wrote it). Every change is a read-modify-write under the region's
//! file lock: reload from disk, apply due housekeeping, apply the change, write atomically.
//! An operation that fails changes nothing on disk.
//!
//! Housekeeping — automatic rotations and deletions whose time has come — runs whenever
//! the keystore is opened or used after its next due time, so no daemon is needed.

use std::os::unix::fs::MetadataExt;
use std::sync::RwLock;

use super::api::*;
use super::backend::{DataKeySpec, KeyBackend};
use super::blob;
use super::clock::{Clock, format_time};
use super::context::EncryptionContext;
use super::error::{KmsError, Result};
use super::ids::{AccountId, AliasName, KeyId, KeyRef, Region, alias_arn, key_arn};
use super::keystore::Keystore;
use super::model::*;
use super::region::RegionDir;
use crate::crypto::{Key256, SecretBytes};
use crate::fsio::FileLock;

/// Aliases of AWS managed keys that cryptvol creates on first use.
pub const MANAGED_ALIASES: &[&str] = &["alias/aws/ebs"];

/// AWS's limits, which we keep so that scripts written for AWS behave the same here.
pub const MAX_PLAINTEXT: usize = 4096;
pub const PENDING_WINDOW_DAYS: std::ops::RangeInclusive<u32> = 7..=30;
pub const DEFAULT_PENDING_WINDOW_DAYS: u32 = 30;
pub const ROTATION_PERIOD_DAYS: std::ops::RangeInclusive<u32> = 90..=2560;
pub const DEFAULT_ROTATION_PERIOD_DAYS: u32 = 365;
const MAX_DESCRIPTION: usize = 8192;

/// Identifies one version of the keystore file on disk, to notice writes by others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    ino: u64,
    mtime_ns: i128,
    size: u64,
}

impl FileStamp {
    fn of(path: &std::path::Path) -> Option<FileStamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            ino: m.ino(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            size: m.size(),
        })
    }
}

struct Loaded {
    ks: Keystore,
    stamp: Option<FileStamp>,
    next_due: Option<UnixTime>,
}

pub struct EmbeddedKms {
    dir: RegionDir,
    account: AccountId,
    root: Key256,
    clock: Clock,
    state: RwLock<Loaded>,
}

impl std::fmt::Debug for EmbeddedKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedKms")
            .field("region", &self.dir.region)
            .finish_non_exhaustive()
    }
}

fn internal_lock_poisoned() -> KmsError {
    KmsError::Unsupported {
        message: "an earlier operation in this process panicked; restart it".into(),
    }
}

impl EmbeddedKms {
    /// Opens a region given its root key, applying any due rotation or deletion.
    pub fn open(dir: RegionDir, root: Key256, clock: Clock) -> Result<Self> {
        let path = dir.keystore_path();
        let stamp = FileStamp::of(&path);
        let ks = Keystore::load(&path, &root, &dir.region)?;
        let kms = EmbeddedKms {
            account: ks.body.account_id.clone(),
            dir,
            root,
            clock,
            state: RwLock::new(Loaded {
                next_due: ks.body.next_due(),
                ks,
                stamp,
            }),
        };
        kms.housekeep_if_due()?;
        Ok(kms)
    }

    /// Opens `region` in `data_dir`; `passphrase` is called only for passphrase regions.
    pub fn open_region(
        data_dir: &std::path::Path,
        region: &Region,
        passphrase: &mut dyn FnMut() -> Result<SecretBytes>,
        clock: Clock,
    ) -> Result<Self> {
        let dir = RegionDir::new(data_dir, region);
        let cfg = dir.config()?;
        let root = dir.open_root_key(&cfg, passphrase)?;
        Self::open(dir, root, clock)
    }

    pub fn region(&self) -> &Region {
        &self.dir.region
    }

    pub fn account(&self) -> &AccountId {
        &self.account
    }

    pub fn arn(&self, id: &KeyId) -> String {
        key_arn(&self.dir.region, &self.account, id)
    }

    fn housekeep_if_due(&self) -> Result<()> {
        let due = {
            let st = self.state.read().map_err(|_| internal_lock_poisoned())?;
            st.next_due.is_some_and(|t| t <= self.clock.now())
        };
        if due {
            self.mutate(|_, _| Ok(()))?;
        }
        Ok(())
    }

    /// Reloads the keystore if another process replaced the file since we read it.
    fn refresh_if_changed(&self) -> Result<()> {
        let path = self.dir.keystore_path();
        let now_stamp = FileStamp::of(&path);
        let stale = {
            let st = self.state.read().map_err(|_| internal_lock_poisoned())?;
            st.stamp != now_stamp
        };
        if stale {
            let ks = Keystore::load(&path, &self.root, &self.dir.region)?;
            let mut st = self.state.write().map_err(|_| internal_lock_poisoned())?;
            *st = Loaded {
                next_due: ks.body.next_due(),
                ks,
                stamp: now_stamp,
            };
        }
        Ok(())
    }

    fn read<T>(&self, f: impl FnOnce(&Keystore, UnixTime) -> Result<T>) -> Result<T> {
        self.refresh_if_changed()?;
        self.housekeep_if_due()?;
        let st = self.state.read().map_err(|_| internal_lock_poisoned())?;
        f(&st.ks, self.clock.now())
    }

    /// Read-modify-write under the region lock. `f` sees the latest keystore on disk with
    /// housekeeping applied; if it fails, only the housekeeping (if any) is written.
    fn mutate<T>(&self, f: impl FnOnce(&mut Keystore, UnixTime) -> Result<T>) -> Result<T> {
        let lock_path = self.dir.lock_path();
        let _lock = FileLock::exclusive(&lock_path)
            .map_err(|e| KmsError::io("cannot lock", &lock_path, e))?;
        let path = self.dir.keystore_path();
        let mut ks = Keystore::load(&path, &self.root, &self.dir.region)?;
        let now = self.clock.now();
        let housekept = housekeep(&mut ks, &self.root, now);
        let out = f(&mut ks, now);
        if out.is_ok() || housekept {
            ks.save(&path, &self.root)?;
        }
        let mut st = self.state.write().map_err(|_| internal_lock_poisoned())?;
        *st = Loaded {
            next_due: ks.body.next_due(),
            stamp: FileStamp::of(&path),
            ks,
        };
        out
    }

    // ---- key resolution -------------------------------------------------------------

    /// Checks that an ARN names this region and account.
    fn check_arn_scope(&self, r: &KeyRef) -> Result<()> {
        if let Some(region) = r.region()
            && region != &self.dir.region
        {
            return Err(KmsError::WrongRegion {
                what: format!("key {r}"),
                named: region.to_string(),
                here: self.dir.region.to_string(),
            });
        }
        if let Some(account) = r.account()
            && account != &self.account
        {
            return Err(KmsError::NotFound {
                what: format!(
                    "key {r} (account {account} is not this data dir's account {})",
                    self.account
                ),
            });
        }
        Ok(())
    }

    fn resolve(&self, ks: &Keystore, r: &KeyRef) -> Result<KeyId> {
        self.check_arn_scope(r)?;
        match r {
            KeyRef::Id(id) | KeyRef::KeyArn { id, .. } => self.existing(ks, id).map(|_| *id),
            KeyRef::Alias(alias) | KeyRef::AliasArn { alias, .. } => ks
                .body
                .aliases
                .get(alias)
                .map(|a| a.target)
                .ok_or_else(|| KmsError::NotFound {
                    what: format!("alias {alias} in region {}", self.dir.region),
                }),
        }
    }

    fn existing<'k>(&self, ks: &'k Keystore, id: &KeyId) -> Result<&'k KeyRecord> {
        if let Some(k) = ks.body.keys.get(id) {
            return Ok(k);
        }
        if let Some(d) = ks.body.deleted_keys.get(id) {
            return Err(KmsError::KeyDeleted {
                key_arn: self.arn(id),
                deleted_on: format_time(d.deleted),
            });
        }
        Err(KmsError::NotFound {
            what: format!("key {id} in region {}", self.dir.region),
        })
    }

    fn existing_mut<'k>(&self, ks: &'k mut Keystore, r: &KeyRef) -> Result<&'k mut KeyRecord> {
        let id = self.resolve(ks, r)?;
        Ok(ks.body.keys.get_mut(&id).expect("resolved ids exist"))
    }

    /// Creates the managed key behind `r` if `r` names one (`alias/aws/ebs`) that does not
    /// exist yet, as AWS does on a service's first use.
    fn ensure_managed(&self, r: &KeyRef) -> Result<()> {
        let alias = match r {
            KeyRef::Alias(a) | KeyRef::AliasArn { alias: a, .. } => a,
            _ => return Ok(()),
        };
        if !MANAGED_ALIASES.contains(&alias.as_str()) {
            return Ok(());
        }
        self.check_arn_scope(r)?;
        self.refresh_if_changed()?;
        let present = {
            let st = self.state.read().map_err(|_| internal_lock_poisoned())?;
            st.ks.body.aliases.contains_key(alias)
        };
        if present {
            return Ok(());
        }
        self.mutate(|ks, now| {
            if ks.body.aliases.contains_key(alias) {
                return Ok(());
            }
            let id = KeyId::random();
            let v = ks.new_version(&self.root, &id, 1, now, VersionOrigin::Initial);
            ks.body.keys.insert(
                id,
                KeyRecord {
                    id,
                    description:
                        "Default key that protects my EBS volumes when no other key is defined"
                            .into(),
                    created: now,
                    state: KeyState::Enabled,
                    manager: KeyManager::Aws,
                    deletion_date: None,
                    pending_window_days: None,
                    tags: Default::default(),
                    rotation: Rotation {
                        enabled: true,
                        period_days: DEFAULT_ROTATION_PERIOD_DAYS,
                        next_rotation: Some(now + DEFAULT_ROTATION_PERIOD_DAYS as i64 * DAY),
                    },
                    versions: vec![v],
                },
            );
            ks.body.aliases.insert(
                alias.clone(),
                AliasRecord {
                    target: id,
                    created: now,
                    updated: now,
                },
            );
            Ok(())
        })
    }

    /// Refuses a change to an AWS managed key.
    fn refuse_managed(&self, k: &KeyRecord, what: &str) -> Result<()> {
        if k.is_managed() {
            return Err(KmsError::Unsupported {
                message: format!(
                    "key {} is an AWS managed key: it cannot be {what} (use a customer managed key from `cryptvol kms create-key` for control)",
                    self.arn(&k.id)
                ),
            });
        }
        Ok(())
    }

    fn pending_state_error(&self, k: &KeyRecord, operation: &str) -> KmsError {
        let arn = self.arn(&k.id);
        KmsError::InvalidState {
            state: format!(
                "pending deletion until {}",
                k.deletion_date.map(format_time).unwrap_or_default()
            ),
            operation: operation.to_string(),
            hint: format!(": cancel with `cryptvol kms cancel-key-deletion --key-id {arn}`"),
            key_arn: arn,
        }
    }

    /// The key must be Enabled for cryptographic use and for most changes.
    fn require_enabled(&self, k: &KeyRecord, operation: &str) -> Result<()> {
        match k.state {
            KeyState::Enabled => Ok(()),
            KeyState::Disabled => Err(KmsError::Disabled {
                key_arn: self.arn(&k.id),
            }),
            KeyState::PendingDeletion => Err(self.pending_state_error(k, operation)),
        }
    }

    fn metadata(&self, k: &KeyRecord) -> KeyMetadata {
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
            origin: "AWS_KMS",
            key_manager: match k.manager {
                KeyManager::Customer => "CUSTOMER",
                KeyManager::Aws => "AWS",
            },
            customer_master_key_spec: SYMMETRIC_DEFAULT,
            key_spec: SYMMETRIC_DEFAULT,
            encryption_algorithms: vec![SYMMETRIC_DEFAULT],
            multi_region: false,
        }
    }

    // ---- key lifecycle ----------------------------------------------------------------

    pub fn create_key(&self, description: &str, tags: &[(String, String)]) -> Result<KeyMetadata> {
        if description.len() > MAX_DESCRIPTION {
            return Err(KmsError::validation(
                "description",
                format!(
                    "{} bytes is over the {MAX_DESCRIPTION}-byte limit",
                    description.len()
                ),
            ));
        }
        let mut tag_map = std::collections::BTreeMap::new();
        for (k, v) in tags {
            if k.is_empty() || k.len() > 128 || v.len() > 256 {
                return Err(KmsError::validation(
                    "tag",
                    format!("'{k}': a tag key is 1 to 128 characters and a value at most 256"),
                ));
            }
            if k.starts_with("aws:") {
                return Err(KmsError::validation(
                    "tag",
                    format!("'{k}': the aws: prefix is reserved"),
                ));
            }
            tag_map.insert(k.clone(), v.clone());
        }
        self.mutate(|ks, now| {
            let id = KeyId::random();
            let v = ks.new_version(&self.root, &id, 1, now, VersionOrigin::Initial);
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
                versions: vec![v],
            };
            let meta = self.metadata(&rec);
            ks.body.keys.insert(id, rec);
            Ok(meta)
        })
    }

    pub fn describe_key(&self, r: &KeyRef) -> Result<KeyMetadata> {
        self.ensure_managed(r)?;
        self.read(|ks, _| {
            let id = self.resolve(ks, r)?;
            Ok(self.metadata(&ks.body.keys[&id]))
        })
    }

    pub fn list_keys(&self) -> Result<ListKeysResponse> {
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
    }

    pub fn enable_key(&self, r: &KeyRef) -> Result<()> {
        self.mutate(|ks, _| {
            let k = self.existing_mut(ks, r)?;
            self.refuse_managed(k, "enabled or disabled")?;
            if k.state == KeyState::PendingDeletion {
                return Err(self.pending_state_error(k, "EnableKey"));
            }
            k.state = KeyState::Enabled;
            Ok(())
        })
    }

    pub fn disable_key(&self, r: &KeyRef) -> Result<()> {
        self.mutate(|ks, _| {
            let k = self.existing_mut(ks, r)?;
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
        r: &KeyRef,
        pending_window_days: Option<u32>,
    ) -> Result<ScheduleKeyDeletionResponse> {
        let days = pending_window_days.unwrap_or(DEFAULT_PENDING_WINDOW_DAYS);
        if !PENDING_WINDOW_DAYS.contains(&days) {
            return Err(KmsError::validation(
                "PendingWindowInDays",
                format!("{days} is outside 7..30"),
            ));
        }
        self.mutate(|ks, now| {
            let k = self.existing_mut(ks, r)?;
            self.refuse_managed(k, "deleted")?;
            if k.state == KeyState::PendingDeletion {
                return Err(self.pending_state_error(k, "ScheduleKeyDeletion"));
            }
            let when = now + days as i64 * DAY;
            k.state = KeyState::PendingDeletion;
            k.deletion_date = Some(when);
            k.pending_window_days = Some(days);
            Ok(ScheduleKeyDeletionResponse {
                key_id: self.arn(&k.id),
                deletion_date: when,
                key_state: KeyState::PendingDeletion.as_str(),
                pending_window_in_days: days,
            })
        })
    }

    /// Cancels a scheduled deletion; the key comes back Disabled, as in AWS.
    pub fn cancel_key_deletion(&self, r: &KeyRef) -> Result<KeyIdResponse> {
        self.mutate(|ks, _| {
            let k = self.existing_mut(ks, r)?;
            if k.state != KeyState::PendingDeletion {
                return Err(KmsError::InvalidState {
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

    // ---- cryptographic operations -------------------------------------------------------

    fn seal_under(
        &self,
        ks: &Keystore,
        k: &KeyRecord,
        ctx: &EncryptionContext,
        plaintext: &[u8],
    ) -> Vec<u8> {
        let v = k.current_version();
        let material = ks
            .material(&k.id, v.number)
            .expect("loaded keystores hold every version");
        blob::seal(&self.dir.region, &k.id, v.number, material, ctx, plaintext)
    }

    pub fn encrypt(
        &self,
        r: &KeyRef,
        plaintext: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<EncryptResponse> {
        if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT {
            return Err(KmsError::validation(
                "Plaintext",
                format!(
                    "{} bytes: Encrypt takes 1 to {MAX_PLAINTEXT} bytes; encrypt larger data locally under a data key from generate-data-key",
                    plaintext.len()
                ),
            ));
        }
        self.ensure_managed(r)?;
        self.read(|ks, _| {
            let id = self.resolve(ks, r)?;
            let k = &ks.body.keys[&id];
            self.require_enabled(k, "Encrypt")?;
            Ok(EncryptResponse {
                ciphertext_blob: self.seal_under(ks, k, ctx, plaintext),
                key_id: self.arn(&id),
                encryption_algorithm: SYMMETRIC_DEFAULT,
            })
        })
    }

    /// Opens a blob; `expected` (the caller's `--key-id`) must be the key the blob names.
    fn open_blob(
        &self,
        ks: &Keystore,
        blob_bytes: &[u8],
        ctx: &EncryptionContext,
        expected: Option<&KeyRef>,
        operation: &str,
    ) -> Result<(KeyId, SecretBytes)> {
        let parsed = blob::parse(blob_bytes).map_err(|e| KmsError::InvalidCiphertext {
            reason: e.to_string(),
        })?;
        let h = &parsed.header;
        if h.region != self.dir.region {
            return Err(KmsError::BlobFromOtherRegion {
                blob_region: h.region.to_string(),
                here: self.dir.region.to_string(),
            });
        }
        if let Some(exp) = expected {
            let want = self.resolve(ks, exp)?;
            if want != h.key_id {
                return Err(KmsError::IncorrectKey {
                    expected: self.arn(&want),
                    actual: self.arn(&h.key_id),
                });
            }
        }
        let k = self.existing(ks, &h.key_id)?;
        self.require_enabled(k, operation)?;
        let material =
            ks.material(&k.id, h.key_version)
                .ok_or_else(|| KmsError::InvalidCiphertext {
                    reason: format!(
                        "names version {} of key {}, which that key does not have",
                        h.key_version,
                        self.arn(&k.id)
                    ),
                })?;
        let plain = parsed.open(material, ctx).map_err(|_| KmsError::InvalidCiphertext {
            reason: format!(
                "does not authenticate under key {}: it was altered, or the encryption context differs from the one it was encrypted with",
                self.arn(&k.id)
            ),
        })?;
        Ok((k.id, plain))
    }

    pub fn decrypt(
        &self,
        blob_bytes: &[u8],
        ctx: &EncryptionContext,
        key: Option<&KeyRef>,
    ) -> Result<DecryptResponse> {
        self.read(|ks, _| {
            let (id, plaintext) = self.open_blob(ks, blob_bytes, ctx, key, "Decrypt")?;
            Ok(DecryptResponse {
                key_id: self.arn(&id),
                plaintext,
                encryption_algorithm: SYMMETRIC_DEFAULT,
            })
        })
    }

    pub fn re_encrypt(
        &self,
        blob_bytes: &[u8],
        source_ctx: &EncryptionContext,
        source_key: Option<&KeyRef>,
        destination: &KeyRef,
        destination_ctx: &EncryptionContext,
    ) -> Result<ReEncryptResponse> {
        // Check the source before creating a managed destination key, so a bad blob
        // changes nothing.
        self.read(|ks, _| {
            self.open_blob(ks, blob_bytes, source_ctx, source_key, "ReEncrypt")
                .map(|_| ())
        })?;
        self.ensure_managed(destination)?;
        self.read(|ks, _| {
            let (src, plain) =
                self.open_blob(ks, blob_bytes, source_ctx, source_key, "ReEncrypt")?;
            let dst = self.resolve(ks, destination)?;
            let k = &ks.body.keys[&dst];
            self.require_enabled(k, "ReEncrypt")?;
            Ok(ReEncryptResponse {
                ciphertext_blob: self.seal_under(ks, k, destination_ctx, plain.expose()),
                source_key_id: self.arn(&src),
                key_id: self.arn(&dst),
                source_encryption_algorithm: SYMMETRIC_DEFAULT,
                destination_encryption_algorithm: SYMMETRIC_DEFAULT,
            })
        })
    }

    fn data_key(
        &self,
        r: &KeyRef,
        spec: DataKeySpec,
        ctx: &EncryptionContext,
    ) -> Result<(KeyId, SecretBytes, Vec<u8>)> {
        let n = spec.len();
        if n == 0 || n > DataKeySpec::MAX_BYTES {
            return Err(KmsError::validation(
                "NumberOfBytes",
                format!("{n} is outside 1..{}", DataKeySpec::MAX_BYTES),
            ));
        }
        self.ensure_managed(r)?;
        self.read(|ks, _| {
            let id = self.resolve(ks, r)?;
            let k = &ks.body.keys[&id];
            self.require_enabled(k, "GenerateDataKey")?;
            let plaintext = SecretBytes::random(n);
            let blob = self.seal_under(ks, k, ctx, plaintext.expose());
            Ok((id, plaintext, blob))
        })
    }

    pub fn generate_data_key(
        &self,
        r: &KeyRef,
        spec: DataKeySpec,
        ctx: &EncryptionContext,
    ) -> Result<GenerateDataKeyResponse> {
        let (id, plaintext, ciphertext_blob) = self.data_key(r, spec, ctx)?;
        Ok(GenerateDataKeyResponse {
            ciphertext_blob,
            plaintext,
            key_id: self.arn(&id),
        })
    }

    pub fn generate_data_key_without_plaintext(
        &self,
        r: &KeyRef,
        spec: DataKeySpec,
        ctx: &EncryptionContext,
    ) -> Result<GenerateDataKeyWithoutPlaintextResponse> {
        let (id, _plaintext, ciphertext_blob) = self.data_key(r, spec, ctx)?;
        Ok(GenerateDataKeyWithoutPlaintextResponse {
            ciphertext_blob,
            key_id: self.arn(&id),
        })
    }

    // ---- rotation ---------------------------------------------------------------------

    pub fn enable_key_rotation(&self, r: &KeyRef, period_days: Option<u32>) -> Result<()> {
        if let Some(p) = period_days
            && !ROTATION_PERIOD_DAYS.contains(&p)
        {
            return Err(KmsError::validation(
                "RotationPeriodInDays",
                format!("{p} is outside 90..2560"),
            ));
        }
        self.mutate(|ks, now| {
            let k = self.existing_mut(ks, r)?;
            self.refuse_managed(k, "given a rotation setting (it is always rotated yearly)")?;
            self.require_enabled(k, "EnableKeyRotation")?;
            let period = period_days.unwrap_or(k.rotation.period_days);
            if !k.rotation.enabled {
                k.rotation.next_rotation = Some(now + period as i64 * DAY);
            } else if period != k.rotation.period_days {
                // As AWS: the next rotation is one new period after the last one.
                k.rotation.next_rotation = Some(k.current_version().created + period as i64 * DAY);
            }
            k.rotation.enabled = true;
            k.rotation.period_days = period;
            Ok(())
        })
    }

    pub fn disable_key_rotation(&self, r: &KeyRef) -> Result<()> {
        self.mutate(|ks, _| {
            let k = self.existing_mut(ks, r)?;
            self.refuse_managed(k, "given a rotation setting (it is always rotated yearly)")?;
            self.require_enabled(k, "DisableKeyRotation")?;
            k.rotation.enabled = false;
            k.rotation.next_rotation = None;
            Ok(())
        })
    }

    pub fn get_key_rotation_status(&self, r: &KeyRef) -> Result<KeyRotationStatusResponse> {
        self.ensure_managed(r)?;
        self.read(|ks, _| {
            let id = self.resolve(ks, r)?;
            let k = &ks.body.keys[&id];
            let on = k.rotation.enabled;
            Ok(KeyRotationStatusResponse {
                key_id: self.arn(&id),
                key_rotation_enabled: on,
                rotation_period_in_days: on.then_some(k.rotation.period_days),
                next_rotation_date: if on { k.rotation.next_rotation } else { None },
            })
        })
    }

    /// Adds a new key version now; the automatic schedule is unchanged, as in AWS.
    pub fn rotate_key_on_demand(&self, r: &KeyRef) -> Result<KeyIdResponse> {
        self.mutate(|ks, now| {
            let id = self.resolve(ks, r)?;
            let k = &ks.body.keys[&id];
            self.refuse_managed(k, "rotated on demand (it is rotated yearly)")?;
            self.require_enabled(k, "RotateKeyOnDemand")?;
            let number = k.current_version().number + 1;
            let v = ks.new_version(&self.root, &id, number, now, VersionOrigin::OnDemand);
            ks.body
                .keys
                .get_mut(&id)
                .expect("resolved")
                .versions
                .push(v);
            Ok(KeyIdResponse {
                key_id: self.arn(&id),
            })
        })
    }

    pub fn list_key_rotations(&self, r: &KeyRef) -> Result<ListKeyRotationsResponse> {
        self.read(|ks, _| {
            let id = self.resolve(ks, r)?;
            let k = &ks.body.keys[&id];
            let rotations = k
                .versions
                .iter()
                .filter(|v| v.origin != VersionOrigin::Initial)
                .map(|v| RotationEntry {
                    key_id: id.to_string(),
                    rotation_date: v.created,
                    rotation_type: match v.origin {
                        VersionOrigin::OnDemand => "ON_DEMAND",
                        _ => "AUTOMATIC",
                    },
                })
                .collect();
            Ok(ListKeyRotationsResponse {
                rotations,
                truncated: false,
            })
        })
    }

    // ---- aliases ----------------------------------------------------------------------

    fn user_alias(name: &str) -> Result<AliasName> {
        let alias = AliasName::parse(name)?;
        if alias.is_reserved() {
            return Err(KmsError::InvalidAliasName {
                name: name.to_string(),
                why: "alias/aws/ is reserved for AWS managed keys".into(),
            });
        }
        Ok(alias)
    }

    /// An alias target: a key id or key ARN of a customer key that is not pending deletion.
    fn alias_target(&self, ks: &Keystore, target: &KeyRef) -> Result<KeyId> {
        if matches!(target, KeyRef::Alias(_) | KeyRef::AliasArn { .. }) {
            return Err(KmsError::validation(
                "TargetKeyId",
                format!("'{target}' is an alias; an alias must point at a key id or key ARN"),
            ));
        }
        let id = self.resolve(ks, target)?;
        let k = &ks.body.keys[&id];
        self.refuse_managed(k, "the target of a customer alias")?;
        if k.state == KeyState::PendingDeletion {
            return Err(self.pending_state_error(k, "CreateAlias/UpdateAlias"));
        }
        Ok(id)
    }

    pub fn create_alias(&self, name: &str, target: &KeyRef) -> Result<()> {
        let alias = Self::user_alias(name)?;
        self.mutate(|ks, now| {
            if ks.body.aliases.contains_key(&alias) {
                return Err(KmsError::AlreadyExists {
                    what: format!("alias {alias}"),
                    hint: ": point it elsewhere with `cryptvol kms update-alias`".into(),
                });
            }
            let id = self.alias_target(ks, target)?;
            ks.body.aliases.insert(
                alias,
                AliasRecord {
                    target: id,
                    created: now,
                    updated: now,
                },
            );
            Ok(())
        })
    }

    pub fn update_alias(&self, name: &str, target: &KeyRef) -> Result<()> {
        let alias = Self::user_alias(name)?;
        self.mutate(|ks, now| {
            let id = self.alias_target(ks, target)?;
            let a = ks
                .body
                .aliases
                .get_mut(&alias)
                .ok_or_else(|| KmsError::NotFound {
                    what: format!("alias {alias} in region {}", self.dir.region),
                })?;
            a.target = id;
            a.updated = now;
            Ok(())
        })
    }

    pub fn delete_alias(&self, name: &str) -> Result<()> {
        let alias = Self::user_alias(name)?;
        self.mutate(|ks, _| {
            ks.body
                .aliases
                .remove(&alias)
                .map(|_| ())
                .ok_or_else(|| KmsError::NotFound {
                    what: format!("alias {alias} in region {}", self.dir.region),
                })
        })
    }

    pub fn list_aliases(&self, key: Option<&KeyRef>) -> Result<ListAliasesResponse> {
        self.read(|ks, _| {
            let only = key.map(|r| self.resolve(ks, r)).transpose()?;
            let aliases = ks
                .body
                .aliases
                .iter()
                .filter(|(_, a)| only.is_none_or(|id| a.target == id))
                .map(|(name, a)| AliasEntry {
                    alias_name: name.to_string(),
                    alias_arn: alias_arn(&self.dir.region, &self.account, name),
                    target_key_id: a.target.to_string(),
                    creation_date: a.created,
                    last_updated_date: a.updated,
                })
                .collect();
            Ok(ListAliasesResponse {
                aliases,
                truncated: false,
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
                            v["sealed"] = serde_json::json!("<60 bytes sealed>");
                        }
                    }
                }
            }
            Ok(serde_json::json!({
                "generation": ks.generation,
                "body": body,
            }))
        })
    }
}

/// Applies due deletions and rotations; true if anything changed.
fn housekeep(ks: &mut Keystore, root: &Key256, now: UnixTime) -> bool {
    let mut changed = false;
    let due_deletions: Vec<KeyId> = ks
        .body
        .keys
        .values()
        .filter(|k| {
            k.state == KeyState::PendingDeletion && k.deletion_date.is_some_and(|d| d <= now)
        })
        .map(|k| k.id)
        .collect();
    for id in due_deletions {
        let k = ks.body.keys.remove(&id).expect("listed above");
        ks.body.aliases.retain(|_, a| a.target != id);
        ks.destroy_material(&id);
        ks.body.deleted_keys.insert(
            id,
            DeletedKey {
                deleted: k.deletion_date.unwrap_or(now),
            },
        );
        changed = true;
    }
    let due_rotations: Vec<KeyId> = ks
        .body
        .keys
        .values()
        .filter(|k| {
            k.state == KeyState::Enabled
                && k.rotation.enabled
                && k.rotation.next_rotation.is_some_and(|t| t <= now)
        })
        .map(|k| k.id)
        .collect();
    for id in due_rotations {
        let number = ks.body.keys[&id].current_version().number + 1;
        let v = ks.new_version(root, &id, number, now, VersionOrigin::Automatic);
        let k = ks.body.keys.get_mut(&id).expect("listed above");
        k.versions.push(v);
        k.rotation.next_rotation = Some(now + k.rotation.period_days as i64 * DAY);
        changed = true;
    }
    changed
}

impl KeyBackend for EmbeddedKms {
    fn generate_data_key(
        &self,
        key: &KeyRef,
        spec: DataKeySpec,
        context: &EncryptionContext,
    ) -> Result<GenerateDataKeyResponse> {
        EmbeddedKms::generate_data_key(self, key, spec, context)
    }

    fn decrypt(&self, blob: &[u8], context: &EncryptionContext) -> Result<DecryptResponse> {
        EmbeddedKms::decrypt(self, blob, context, None)
    }

    fn re_encrypt(
        &self,
        blob: &[u8],
        source_context: &EncryptionContext,
        destination: &KeyRef,
        destination_context: &EncryptionContext,
    ) -> Result<ReEncryptResponse> {
        EmbeddedKms::re_encrypt(
            self,
            blob,
            source_context,
            None,
            destination,
            destination_context,
        )
    }

    fn describe_key(&self, key: &KeyRef) -> Result<KeyMetadata> {
        EmbeddedKms::describe_key(self, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::region;

    fn setup() -> (tempfile::TempDir, Region) {
        let d = tempfile::tempdir().unwrap();
        let r = Region::parse("test-1").unwrap();
        region::init(d.path(), &r, None, 0).unwrap();
        (d, r)
    }

    fn open(d: &tempfile::TempDir, r: &Region, clock: Clock) -> EmbeddedKms {
        let mut no = || -> Result<SecretBytes> { panic!("key-file region asks no passphrase") };
        EmbeddedKms::open_region(d.path(), r, &mut no, clock).unwrap()
    }

    #[test]
    fn backend_trait_roundtrip_binds_context() {
        let (d, r) = setup();
        let kms = open(&d, &r, Clock::System);
        let backend: &dyn KeyBackend = &kms;
        let ctx = EncryptionContext::single("cryptvol:lineage", "vol-1");
        let key = KeyRef::parse("alias/aws/ebs").unwrap();
        let dk = backend
            .generate_data_key(&key, DataKeySpec::Bytes(64), &ctx)
            .unwrap();
        assert_eq!(dk.plaintext.len(), 64);
        let back = backend.decrypt(&dk.ciphertext_blob, &ctx).unwrap();
        assert_eq!(back.plaintext, dk.plaintext);
        assert_eq!(back.key_id, dk.key_id);
        let other = EncryptionContext::single("cryptvol:lineage", "vol-2");
        assert!(matches!(
            backend.decrypt(&dk.ciphertext_blob, &other),
            Err(KmsError::InvalidCiphertext { .. })
        ));
        assert_eq!(backend.describe_key(&key).unwrap().key_manager, "AWS");
    }

    #[test]
    fn automatic_rotation_happens_on_open_when_due_and_old_blobs_decrypt() {
        let (d, r) = setup();
        let kms = open(&d, &r, Clock::System);
        let id = KeyRef::parse(&kms.create_key("", &[]).unwrap().key_id).unwrap();
        kms.enable_key_rotation(&id, Some(90)).unwrap();
        let ctx = EncryptionContext::new();
        let old = kms.encrypt(&id, b"before", &ctx).unwrap().ciphertext_blob;
        drop(kms);

        let later = open(&d, &r, Clock::Skewed(91 * DAY));
        let rot = later.list_key_rotations(&id).unwrap().rotations;
        assert_eq!(rot.len(), 1);
        assert_eq!(rot[0].rotation_type, "AUTOMATIC");
        let new = later.encrypt(&id, b"after", &ctx).unwrap().ciphertext_blob;
        assert_eq!(blob::parse(&new).unwrap().header.key_version, 2);
        assert_eq!(
            later.decrypt(&old, &ctx, None).unwrap().plaintext.expose(),
            b"before"
        );
        // Next rotation is one period after this one, not immediately again.
        let status = later.get_key_rotation_status(&id).unwrap();
        assert!(status.next_rotation_date.unwrap() > Clock::Skewed(91 * DAY).now() + 89 * DAY);
    }

    #[test]
    fn deletion_destroys_material_when_window_ends() {
        let (d, r) = setup();
        let kms = open(&d, &r, Clock::System);
        let id = KeyRef::parse(&kms.create_key("", &[]).unwrap().key_id).unwrap();
        kms.create_alias("alias/doomed", &id).unwrap();
        let ctx = EncryptionContext::new();
        let b = kms.encrypt(&id, b"x", &ctx).unwrap().ciphertext_blob;
        kms.schedule_key_deletion(&id, Some(7)).unwrap();
        assert!(matches!(
            kms.decrypt(&b, &ctx, None),
            Err(KmsError::InvalidState { .. })
        ));
        drop(kms);
        // Six days on: still pending, still refusing.
        let six = open(&d, &r, Clock::Skewed(6 * DAY));
        assert_eq!(six.describe_key(&id).unwrap().key_state, "PendingDeletion");
        drop(six);
        let eight = open(&d, &r, Clock::Skewed(8 * DAY));
        assert!(matches!(
            eight.decrypt(&b, &ctx, None),
            Err(KmsError::KeyDeleted { .. })
        ));
        assert!(matches!(
            eight.describe_key(&id),
            Err(KmsError::KeyDeleted { .. })
        ));
        assert!(eight.list_aliases(None).unwrap().aliases.is_empty());
        let summary = eight.keystore_summary().unwrap();
        let key_id = id.to_string();
        assert!(
            summary["body"]["keys"].get(&key_id).is_none(),
            "record and sealed versions gone"
        );
        assert!(
            summary["body"]["deleted_keys"].get(&key_id).is_some(),
            "tombstone kept"
        );
    }

    #[test]
    fn writers_in_parallel_lose_nothing() {
        let (d, r) = setup();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let path = d.path().to_path_buf();
                let r = r.clone();
                std::thread::spawn(move || {
                    let mut no = || -> Result<SecretBytes> { unreachable!() };
                    let kms = EmbeddedKms::open_region(&path, &r, &mut no, Clock::System).unwrap();
                    for _ in 0..5 {
                        kms.create_key("", &[]).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(
            open(&d, &r, Clock::System).list_keys().unwrap().keys.len(),
            20
        );
    }

    #[test]
    fn a_long_lived_instance_sees_changes_by_others() {
        let (d, r) = setup();
        let server = open(&d, &r, Clock::System);
        let id = KeyRef::parse(&server.create_key("", &[]).unwrap().key_id).unwrap();
        let ctx = EncryptionContext::new();
        assert!(server.encrypt(&id, b"x", &ctx).is_ok());
        open(&d, &r, Clock::System).disable_key(&id).unwrap();
        assert!(matches!(
            server.encrypt(&id, b"x", &ctx),
            Err(KmsError::Disabled { .. })
        ));
    }

    #[test]
    fn failed_mutation_changes_nothing_on_disk() {
        let (d, r) = setup();
        let kms = open(&d, &r, Clock::System);
        let id = KeyRef::parse(&kms.create_key("", &[]).unwrap().key_id).unwrap();
        let path = d.path().join("regions/test-1/keystore.cvks");
        let before = std::fs::read(&path).unwrap();
        assert!(kms.create_alias("alias/aws/mine", &id).is_err());
        assert!(kms.schedule_key_deletion(&id, Some(3)).is_err());
        assert!(kms.cancel_key_deletion(&id).is_err());
        assert!(kms.delete_alias("alias/none").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }
}
