//! Ending grants: RetireGrant (by the grant's retiring principal, its grantee when the
//! grant allows RetireGrant, or the issuing account) and RevokeGrant (by whom the key's
//! policies allow kms:RevokeGrant), each with its `DryRun`.

use super::{GrantUse, MAX_GRANT_TOKEN_LEN, RetireGrantRequest, rules::*};
use crate::aws::error::{AwsError, Result};
use crate::iam::caller::Caller;
use crate::iam::root_arn;
use crate::kms::embedded::{EmbeddedKms, dry_run};
use crate::kms::event::Call;
use crate::kms::ids::{KeyId, KeyRef};
use crate::kms::keystore::Keystore;
use crate::kms::model::GrantRecord;

impl EmbeddedKms {
    /// RetireGrant: allowed to the grant's retiring principal, its grantee when the grant
    /// includes RetireGrant, and the account that issued it (AWS's rule), unless a policy
    /// explicitly denies kms:RetireGrant.
    pub fn retire_grant(&self, caller: &Caller, req: &RetireGrantRequest) -> Result<()> {
        self.retire_grant_as(caller, req, false)
    }

    /// RetireGrant with `DryRun`: every check, then DryRunOperationException; the grant stays.
    pub fn retire_grant_dry_run(&self, caller: &Caller, req: &RetireGrantRequest) -> AwsError {
        dry_run::answer(self.retire_grant_as(caller, req, true))
    }

    fn retire_grant_as(
        &self,
        caller: &Caller,
        req: &RetireGrantRequest,
        dry_run: bool,
    ) -> Result<()> {
        let mut call = Call::new("RetireGrant", false);
        if dry_run {
            call = call.param("dryRun", true);
        }
        // The token is not recorded; the key and grant it names are.
        let target = self.retire_target(req);
        if let Ok((k, g)) = &target {
            call = call
                .param("keyId", k.to_string())
                .param("grantId", g.as_str());
        }
        let out = target.and_then(|t| self.retire_inner(caller, t, &mut call, dry_run));
        self.finish(caller, call, out)
    }

    fn retire_target(&self, req: &RetireGrantRequest) -> Result<(KeyRef, String)> {
        match (&req.grant_token, &req.key, &req.grant_id) {
            (Some(t), key, grant) => {
                if t.is_empty() || t.len() > MAX_GRANT_TOKEN_LEN {
                    return Err(AwsError::validation(
                        "GrantToken",
                        format!("{} characters is outside 1..{MAX_GRANT_TOKEN_LEN}", t.len()),
                    ));
                }
                let (k, g) = self.open_grant_token(t)?;
                if grant.as_ref().is_some_and(|x| !x.eq_ignore_ascii_case(&g))
                    || (key.is_some() && grant.is_none())
                {
                    return Err(AwsError::validation(
                        "GrantToken",
                        "the token names another grant than KeyId and GrantId: give the token alone, or KeyId and GrantId",
                    ));
                }
                Ok((key.clone().unwrap_or(KeyRef::Id(k)), g))
            }
            (None, Some(k), Some(g)) => {
                check_grant_id(g)?;
                Ok((k.clone(), g.to_ascii_lowercase()))
            }
            _ => Err(AwsError::validation(
                "GrantToken",
                "give a GrantToken, or both KeyId and GrantId",
            )),
        }
    }

    fn retire_inner(
        &self,
        caller: &Caller,
        (key, grant_id): (KeyRef, String),
        call: &mut Call,
        dry_run: bool,
    ) -> Result<()> {
        self.mutate(Some(caller), call, |ks, _, call| {
            let k = self.resolve_key(ks, &key)?;
            let id = k.id;
            let arn = self.arn(&id);
            call.resource(&arn);
            let (pos, g) = find_grant(ks, &id, &grant_id, &arn)?;
            let aws = [("kms:GrantIsForAWSResource", for_aws_resource(caller))];
            self.explicitly_denied(caller, "kms:RetireGrant", k, &aws)?;
            let retiring = g
                .retiring
                .as_deref()
                .is_some_and(|r| is_principal(caller, r, g.retiring_id.as_deref()));
            let grantee = allows(g, caller, "RetireGrant", &GrantUse::NoContext);
            let issuer = caller.identity.is_root() && g.issuing_account == root_arn(&self.account);
            if !(retiring || grantee || issuer) {
                return Err(AwsError::AccessDenied {
                    message: format!(
                        "User: {} is not authorized to perform: kms:RetireGrant on resource: {arn} because it is not the grant's retiring principal, nor its grantee with RetireGrant among the grant's operations, nor the account that issued it",
                        caller.identity.arn()
                    ),
                });
            }
            if grantee && !retiring && !issuer {
                call.grant_id = Some(g.id.clone());
            }
            if dry_run {
                return Err(AwsError::DryRun);
            }
            remove_grant(ks, &id, pos);
            call.respond(serde_json::json!({ "keyId": arn }));
            Ok(())
        })
    }

    pub fn revoke_grant(&self, caller: &Caller, key: &KeyRef, grant_id: &str) -> Result<()> {
        self.revoke_grant_as(caller, key, grant_id, false)
    }

    /// RevokeGrant with `DryRun`: every check, then DryRunOperationException; the grant stays.
    pub fn revoke_grant_dry_run(&self, caller: &Caller, key: &KeyRef, grant_id: &str) -> AwsError {
        dry_run::answer(self.revoke_grant_as(caller, key, grant_id, true))
    }

    fn revoke_grant_as(
        &self,
        caller: &Caller,
        key: &KeyRef,
        grant_id: &str,
        dry_run: bool,
    ) -> Result<()> {
        let mut call = Call::new("RevokeGrant", false)
            .param("keyId", key.to_string())
            .param("grantId", grant_id);
        if dry_run {
            call = call.param("dryRun", true);
        }
        let out = check_grant_id(grant_id).and_then(|()| {
            self.mutate(Some(caller), &mut call, |ks, _, call| {
                let k = self.resolve_key(ks, key)?;
                let id = k.id;
                let arn = self.arn(&id);
                call.resource(&arn);
                let aws = [("kms:GrantIsForAWSResource", for_aws_resource(caller))];
                self.authorize(caller, "kms:RevokeGrant", Some(k), None, &aws)?;
                let (pos, _) = find_grant(ks, &id, &grant_id.to_ascii_lowercase(), &arn)?;
                if dry_run {
                    return Err(AwsError::DryRun);
                }
                remove_grant(ks, &id, pos);
                call.respond(serde_json::json!({ "keyId": arn }));
                Ok(())
            })
        });
        self.finish(caller, call, out)
    }
}

fn find_grant<'k>(
    ks: &'k Keystore,
    key: &KeyId,
    grant_id: &str,
    arn: &str,
) -> Result<(usize, &'k GrantRecord)> {
    ks.body
        .grants
        .get(key)
        .and_then(|gs| gs.iter().enumerate().find(|(_, g)| g.id == grant_id))
        .ok_or_else(|| AwsError::NotFound {
            what: format!(
                "grant {grant_id} on key {arn} (it was retired or revoked, or never made: see `cryptvol kms list-grants --key-id {arn}`)"
            ),
        })
}

fn remove_grant(ks: &mut Keystore, key: &KeyId, pos: usize) {
    if let Some(gs) = ks.body.grants.get_mut(key) {
        gs.remove(pos);
        if gs.is_empty() {
            ks.body.grants.remove(key);
        }
    }
}
