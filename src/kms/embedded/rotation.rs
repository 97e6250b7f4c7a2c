//! Key rotation: EnableKeyRotation, DisableKeyRotation, GetKeyRotationStatus,
//! RotateKeyOnDemand and ListKeyRotations. Automatic rotations that come due are applied
//! by the keystore's housekeeping (`housekeep` in mod.rs).

use super::{EmbeddedKms, ROTATION_PERIOD_DAYS, checks};
use crate::aws::error::{AwsError, Result};
use crate::iam::caller::Caller;
use crate::kms::api::*;
use crate::kms::event::Call;
use crate::kms::ids::KeyRef;
use crate::kms::model::*;
impl EmbeddedKms {
    pub fn enable_key_rotation(
        &self,
        caller: &Caller,
        r: &KeyRef,
        period_days: Option<u32>,
    ) -> Result<()> {
        let mut call = Call::new("EnableKeyRotation", false).param("keyId", r.to_string());
        if let Some(p) = period_days {
            call = call.param("rotationPeriodInDays", p);
        }
        self.change_key(caller, call, r, "kms:EnableKeyRotation", |k, now, _| {
            if let Some(p) = period_days
                && !ROTATION_PERIOD_DAYS.contains(&p)
            {
                return Err(AwsError::validation(
                    "RotationPeriodInDays",
                    format!("{p} is outside 90..2560"),
                ));
            }
            self.refuse_managed(k, "given a rotation setting (it is always rotated yearly)")?;
            if let Some(store) = &k.custom_key_store_id {
                // As AWS: a key whose material a token holds is not rotated on a timer
                // (the token may be absent when the time comes); rotate it on demand.
                return Err(AwsError::Unsupported {
                    message: format!(
                        "key {} is in custom key store {store}: automatic rotation is not offered for such keys; rotate it with `cryptvol kms rotate-key-on-demand --key-id {}`",
                        self.arn(&k.id),
                        self.arn(&k.id)
                    ),
                });
            }
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

    pub fn disable_key_rotation(&self, caller: &Caller, r: &KeyRef) -> Result<()> {
        let call = Call::new("DisableKeyRotation", false).param("keyId", r.to_string());
        self.change_key(caller, call, r, "kms:DisableKeyRotation", |k, _, _| {
            self.refuse_managed(k, "given a rotation setting (it is always rotated yearly)")?;
            self.require_enabled(k, "DisableKeyRotation")?;
            k.rotation.enabled = false;
            k.rotation.next_rotation = None;
            Ok(())
        })
    }

    pub fn get_key_rotation_status(
        &self,
        caller: &Caller,
        r: &KeyRef,
    ) -> Result<KeyRotationStatusResponse> {
        let mut call = Call::new("GetKeyRotationStatus", true).param("keyId", r.to_string());
        let out = self.ensure_managed(r).and_then(|()| {
            self.read(|ks, _| {
                let k = self.resolve_authorized(
                    ks,
                    r,
                    caller,
                    &mut call,
                    "kms:GetKeyRotationStatus",
                    None,
                )?;
                let on = k.rotation.enabled;
                Ok(KeyRotationStatusResponse {
                    key_id: self.arn(&k.id),
                    key_rotation_enabled: on,
                    rotation_period_in_days: on.then_some(k.rotation.period_days),
                    next_rotation_date: if on { k.rotation.next_rotation } else { None },
                })
            })
        });
        self.finish(caller, call, out)
    }

    /// Adds a new key version now; the automatic schedule is unchanged, as in AWS. For a
    /// key in a custom key store the version is made in the store's token.
    pub fn rotate_key_on_demand(&self, caller: &Caller, r: &KeyRef) -> Result<KeyIdResponse> {
        let mut call = Call::new("RotateKeyOnDemand", false).param("keyId", r.to_string());
        let out = self.mutate(Some(caller), &mut call, |ks, now, call| {
            let k = self.resolve_authorized(ks, r, caller, call, "kms:RotateKeyOnDemand", None)?;
            self.refuse_managed(k, "rotated on demand (it is rotated yearly)")?;
            self.require_enabled(k, "RotateKeyOnDemand")?;
            checks::check_on_demand_limit(k, &self.arn(&k.id))?;
            let id = k.id;
            let number = k.current_version().number + 1;
            let v = match k.custom_key_store_id.clone() {
                None => ks.new_version(&self.root()?, &id, number, now, VersionOrigin::OnDemand),
                Some(sid) => {
                    // The new version is a new object in the token; the old objects stay
                    // and keep decrypting what they sealed.
                    self.key_token(ks, k, "RotateKeyOnDemand")?;
                    let store = &ks.body.custom_key_stores[&sid];
                    self.new_token_version(store, &id, number, now, VersionOrigin::OnDemand)?
                }
            };
            self.existing_mut(ks, &id)?.versions.push(v);
            Ok(KeyIdResponse {
                key_id: self.arn(&id),
            })
        });
        self.finish(caller, call, out)
    }

    pub fn list_key_rotations(
        &self,
        caller: &Caller,
        r: &KeyRef,
    ) -> Result<ListKeyRotationsResponse> {
        let mut call = Call::new("ListKeyRotations", true).param("keyId", r.to_string());
        let out = self.read(|ks, _| {
            let k =
                self.resolve_authorized(ks, r, caller, &mut call, "kms:ListKeyRotations", None)?;
            let rotations = k
                .versions
                .iter()
                .filter(|v| v.origin != VersionOrigin::Initial)
                .map(|v| RotationEntry {
                    key_id: k.id.to_string(),
                    rotation_date: v.created,
                    rotation_type: match v.origin {
                        VersionOrigin::OnDemand => "ON_DEMAND",
                        _ => "AUTOMATIC",
                    },
                    key_material_id: v.material_id().to_string(),
                })
                .collect();
            Ok(ListKeyRotationsResponse {
                rotations,
                truncated: false,
            })
        });
        self.finish(caller, call, out)
    }
}
