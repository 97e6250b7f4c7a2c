//! The volume service's side of the KMS, as EBS uses AWS KMS: a volume's data key is made
//! under a customer's key together with a grant to the volume service
//! (`ec2.<region>.amazonaws.com`), constrained to the volume's lineage and named after the
//! volume; an attach by a user whom identity policies allow `ec2:AttachVolume` is then
//! unwrapped by the service through that grant, so an administrator can let a user attach
//! a volume without giving that user `kms:Decrypt` on the key. The grant is retired when
//! the volume is deleted.
//!
//! A user not allowed `ec2:AttachVolume` (no identity policy says so) still attaches with
//! their own `kms:Decrypt` through the volume service (`kms:ViaService`), as before; an
//! explicit Deny of `ec2:AttachVolume` refuses the attach outright.

use super::{CreateGrantRequest, EmbeddedKms, GrantConstraintsInput, RetireGrantRequest, Session};
use crate::aws::error::{AwsError, Result};
use crate::iam::caller::{Caller, volume_service};
use crate::kms::api::DecryptResponse;
use crate::kms::context::EncryptionContext;
use crate::kms::ids::KeyRef;
use crate::policy::Decision;

/// The IAM action that lets a user attach a volume (EC2's name for it).
pub const ATTACH_VOLUME_ACTION: &str = "ec2:AttachVolume";

/// The only operation a volume's grant gives: unwrapping its data keys.
const VOLUME_GRANT_OPERATIONS: &[&str] = &["Decrypt"];

impl EmbeddedKms {
    /// `arn:aws:ec2:<region>:<account>:volume/<id>`, the resource `ec2:AttachVolume` names.
    pub fn volume_arn(&self, volume: &str) -> String {
        format!(
            "arn:aws:ec2:{}:{}:volume/{volume}",
            self.dir.region, self.account
        )
    }

    /// The ids of `key`'s live grants named `name` whose grantee is `grantee`: the volume
    /// service looks up its own grants here rather than through ListGrants, which would
    /// need the user's `kms:ListGrants`.
    fn grants_named(&self, key: &KeyRef, name: &str, grantee: &str) -> Result<Vec<String>> {
        self.read(|ks, _| {
            let id = self.resolve(ks, key)?;
            Ok(ks
                .body
                .grants
                .get(&id)
                .into_iter()
                .flatten()
                .filter(|g| g.name.as_deref() == Some(name) && g.grantee == grantee)
                .map(|g| g.id.clone())
                .collect())
        })
    }

    /// Whether `key` has a live grant named `volume` to `grantee` whose constraint holds
    /// for `context`: the grant of the volume the caller may attach must be the one that
    /// covers the data key presented, or a header naming one volume could carry another's
    /// key and be unwrapped through that other volume's grant.
    fn volume_grant_covers(
        &self,
        key: &KeyRef,
        volume: &str,
        grantee: &str,
        context: &EncryptionContext,
    ) -> Result<bool> {
        self.read(|ks, _| {
            let id = self.resolve(ks, key)?;
            Ok(ks.body.grants.get(&id).into_iter().flatten().any(|g| {
                g.name.as_deref() == Some(volume)
                    && g.grantee == grantee
                    && g.operations.iter().any(|o| o == "Decrypt")
                    && super::grants::constraint_holds(g.constraint.as_ref(), context)
            }))
        })
    }

    /// How identity policies answer `ec2:AttachVolume` on `volume` for `caller`.
    fn attach_decision(&self, caller: &Caller, volume: &str) -> (Decision, String) {
        let resource = self.volume_arn(volume);
        let decision = self.decision(
            caller,
            false,
            ATTACH_VOLUME_ACTION,
            None,
            Some(&resource),
            None,
            &[],
        );
        (decision, resource)
    }
}

impl<K: std::borrow::Borrow<EmbeddedKms>> Session<K> {
    fn service(&self) -> (String, Caller) {
        let name = volume_service(self.kms().region());
        let caller = Caller::aws_service(&name, self.caller());
        (name, caller)
    }

    /// See [`crate::kms::KeyBackend::grant_volume_service`]: CreateGrant by the user
    /// through the volume service (`kms:GrantIsForAWSResource` true), as EBS asks for one.
    pub(super) fn make_volume_grant(
        &self,
        key: &str,
        context: &EncryptionContext,
        volume: &str,
    ) -> Result<Option<String>> {
        let (service, _) = self.service();
        let req = CreateGrantRequest {
            key: KeyRef::parse(key)?,
            grantee_principal: service.clone(),
            retiring_principal: Some(service),
            operations: VOLUME_GRANT_OPERATIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            constraints: Some(GrantConstraintsInput {
                encryption_context_subset: Some(
                    context
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                encryption_context_equals: None,
            }),
            name: Some(volume.to_string()),
        };
        let out = self.kms().create_grant(self.caller(), &req)?;
        Ok(Some(out.grant_id))
    }

    /// See [`crate::kms::KeyBackend::retire_volume_service_grant`]: the service retires
    /// its own grants (it is their retiring principal), so the user needs no permission.
    pub(super) fn retire_volume_grant(&self, key: &str, volume: &str) -> Result<()> {
        let (name, service) = self.service();
        let key = KeyRef::parse(key)?;
        for grant_id in self.kms().grants_named(&key, volume, &name)? {
            let req = RetireGrantRequest {
                grant_token: None,
                key: Some(key.clone()),
                grant_id: Some(grant_id),
            };
            self.kms().retire_grant(&service, &req)?;
        }
        Ok(())
    }

    /// See [`crate::kms::KeyBackend::decrypt_for_volume`].
    pub(super) fn decrypt_volume_key(
        &self,
        blob: &[u8],
        context: &EncryptionContext,
        volume: &str,
    ) -> Result<DecryptResponse> {
        let kms = self.kms();
        let (decision, resource) = kms.attach_decision(self.caller(), volume);
        match decision {
            Decision::Allow => {}
            Decision::DenyExplicitInIdentityPolicy | Decision::DenyExplicitInKeyPolicy => {
                return Err(AwsError::AccessDenied {
                    message: decision
                        .denial_message(
                            &self.caller().identity.arn(),
                            ATTACH_VOLUME_ACTION,
                            &resource,
                        )
                        .unwrap_or_default(),
                });
            }
            // Not allowed to attach as such: the user's own kms:Decrypt decides.
            _ => return kms.decrypt(self.caller(), blob, context, None),
        }
        let (name, service) = self.service();
        let key = match crate::kms::blob::parse(blob) {
            Ok(parsed) => KeyRef::Id(parsed.header.key_id),
            // Not a blob: Decrypt answers with the right error.
            Err(_) => return kms.decrypt(self.caller(), blob, context, None),
        };
        // A volume made before volume grants existed (or whose grant was revoked) has none,
        // and a grant of this volume that does not cover this key is not this key's: the
        // user's own permissions decide, as for a user not allowed to attach.
        match kms.volume_grant_covers(&key, volume, &name, context) {
            Ok(true) => kms.decrypt(&service, blob, context, None),
            _ => kms.decrypt(self.caller(), blob, context, None),
        }
    }
}
