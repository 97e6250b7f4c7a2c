//! Rotation: RotateSecret, CancelRotateSecret, and the rotations that fall due.
//!
//! AWS rotates with a Lambda function; here the function is a local executable (set only
//! through the CLI: a network client must not choose a program this machine runs). For
//! each of AWS's four steps it is run as `CMD <Step> <SecretARN> <ClientRequestToken>`,
//! with the same in `CRYPTVOL_ROTATION_STEP`, `CRYPTVOL_SECRET_ID`,
//! `CRYPTVOL_CLIENT_REQUEST_TOKEN`, and `CRYPTVOL_DATA_DIR`/`CRYPTVOL_REGION`/
//! `CRYPTVOL_PROFILE` so that it calls `cryptvol secretsmanager ...` back as a Lambda
//! calls the API (createSecret puts the new value under AWSPENDING with the token,
//! finishSecret moves AWSCURRENT to it). Exit status 0 is success. The store is not
//! locked while the command runs; a per-secret lock keeps two rotations of one secret
//! apart.
//!
//! A rotation left unfinished (AWSPENDING on a version that is not AWSCURRENT) must be
//! retried with its token (due rotations do that) or its label removed; RotateSecret
//! with another token is refused, as AWS refuses it. A caller the CLI cannot act as (a
//! service) does not run a command.
//!
//! `RotateImmediately: false` saves the schedule and runs testSecret alone on an
//! AWSPENDING copy of the current value (removed after), as AWS tests a rotation set up
//! for later. Due rotations run only for a caller allowed
//! `secretsmanager:RotateSecret` on the secret.
//!
//! After finishSecret, AWSCURRENT must be on the token's version; then AWSPENDING is
//! removed and LastRotatedDate and NextRotationDate are set. A failed step leaves
//! AWSCURRENT where it was and is reported (RotationFailed, exit 28), and recorded in the
//! trail as AWS records it (`RotationFailed` / `RotationSucceeded`), without the
//! command's output, which is the user's to read and might hold a value.

use std::path::Path;

use serde_json::{Value, json};

use super::errors::{self, validation};
use super::lifecycle::arn_name;
use super::model::{AWSCURRENT, AWSPENDING};
use super::request::Request;
use super::schedule::{next_due, rules_of};
use super::{Call, SecretsManager, Via};
use crate::aws::AwsError;
use crate::iam::caller::Caller;
use crate::sys::fsio::FileLock;

/// AWS's four steps, in order.
pub const STEPS: [&str; 4] = ["createSecret", "setSecret", "testSecret", "finishSecret"];

/// The version an unfinished rotation left AWSPENDING on (not AWSCURRENT's, not `token`).
pub(super) fn unfinished(s: &super::model::SecretRecord, token: &str) -> Option<String> {
    s.versions
        .iter()
        .find(|(vid, v)| {
            vid.as_str() != token
                && v.stages.iter().any(|x| x == AWSPENDING)
                && !v.stages.iter().any(|x| x == AWSCURRENT)
        })
        .map(|(vid, _)| vid.clone())
}

impl SecretsManager {
    pub(super) fn rotate_secret(&self, c: &Call, r: &Request) -> Result<Value, AwsError> {
        let id = r.required_str("SecretId")?;
        let token = r.str_len("ClientRequestToken", 32, 64)?;
        if r.has("RotationLambdaARN") {
            return Err(errors::invalid_parameter(
                "RotationLambdaARN: cryptvol rotates with a local command, not a Lambda function; set it on this machine with `cryptvol secretsmanager rotate-secret --rotation-command PATH`",
            ));
        }
        let command = r.str("RotationCommand")?;
        if command.is_some() && !matches!(c.via, Via::Cli) {
            return Err(errors::invalid_parameter(
                "RotationCommand can be set only through the local CLI (`cryptvol secretsmanager rotate-secret --rotation-command PATH`), never over the network",
            ));
        }
        if let Some(cmd) = command
            && !Path::new(cmd).is_absolute()
        {
            return Err(validation(
                "RotationCommand",
                format!("'{cmd}' must be an absolute path"),
            ));
        }
        let rules = rules_of(r, self.now())?;
        let now_rotate = r.bool("RotateImmediately")?.unwrap_or(true);
        let token = token
            .map(str::to_string)
            .unwrap_or_else(crate::kms::event::fast_uuid);
        if token.starts_with('-') {
            return Err(validation(
                "ClientRequestToken",
                "must not begin with '-' (the rotation command takes it as an argument)",
            ));
        }
        let answer = self.change(c, |body, now| {
            let s = self.live_mut(c, body, id, "secretsmanager:RotateSecret")?;
            let arn = s.arn.clone();
            if let Some(cmd) = command {
                s.rotation.command = Some(cmd.to_string());
            }
            if s.rotation.command.is_none() {
                return Err(errors::invalid_request(format!(
                    "secret {arn} has no rotation command: give one with `cryptvol secretsmanager rotate-secret --secret-id {arn} --rotation-command PATH`"
                )));
            }
            if now_rotate
                && let Some(pending) = unfinished(s, &token)
            {
                return Err(errors::invalid_request(format!(
                    "A previous rotation of secret {arn} isn't complete: version {pending} still has AWSPENDING (retry it with ClientRequestToken {pending}, or remove the label with UpdateSecretVersionStage)"
                )));
            }
            if let Some(rules) = &rules {
                s.rotation.rules = Some(rules.clone());
            }
            s.rotation.enabled = true;
            if !now_rotate {
                let from = s.rotation.last_rotated.unwrap_or(now);
                s.rotation.next_rotation = match &s.rotation.rules {
                    Some(rules) => next_due(rules, from)?,
                    None => None,
                };
            }
            s.last_changed = now;
            let mut out = arn_name(s);
            if now_rotate {
                out["VersionId"] = token.clone().into();
            }
            Ok(out)
        })?;
        let arn = answer["ARN"].as_str().unwrap_or_default().to_string();
        if now_rotate {
            self.rotate_now(c.caller, c.via, &arn, &token)?;
        } else {
            // As AWS: a rotation set up to run later is tested now, by testSecret alone
            // on an AWSPENDING copy of the current value, which is removed after.
            let command = self.command_of(&arn)?;
            let copied = self.pending_copy(c, &arn, &token)?;
            let tested = self.run_step(c.caller, &command, "testSecret", &arn, &token);
            if copied {
                self.store.mutate(self.now(), |body| {
                    if let Some(s) = body.secrets.get_mut(&arn) {
                        s.versions.remove(&token);
                    }
                    Ok(())
                })?;
            }
            if let Err(why) = tested {
                self.record_rotation(c.caller, c.via, &arn, &token, Some("testSecret"));
                return Err(AwsError::RotationFailed {
                    secret_arn: arn,
                    step: "testSecret",
                    message: why,
                    retry: String::new(),
                });
            }
        }
        Ok(answer)
    }

    pub(super) fn cancel_rotate_secret(&self, c: &Call, r: &Request) -> Result<Value, AwsError> {
        let id = r.required_str("SecretId")?;
        self.change(c, |body, now| {
            let s = self.live_mut(c, body, id, "secretsmanager:CancelRotateSecret")?;
            s.rotation.enabled = false;
            s.rotation.next_rotation = None;
            s.last_changed = now;
            let mut out = arn_name(s);
            if let Some((vid, _)) = s.version_with(AWSPENDING) {
                out["VersionId"] = vid.clone().into();
            }
            Ok(out)
        })
    }

    /// Runs the four steps for `arn` with `token` now.
    pub(super) fn rotate_now(
        &self,
        caller: &Caller,
        via: Via,
        arn: &str,
        token: &str,
    ) -> Result<(), AwsError> {
        let dir = self.kms.region_dir().secrets_dir();
        let lock_path = dir.join(format!(
            "rotation-{}.lock",
            &blake3::hash(arn.as_bytes()).to_hex()[..16]
        ));
        let _lock = FileLock::try_exclusive(&lock_path)
            .map_err(|e| AwsError::io("lock", &lock_path, e))?
            .ok_or_else(|| {
                errors::invalid_request(format!(
                    "a rotation of secret {arn} is already in progress: wait for it to end"
                ))
            })?;
        let command = self.command_of(arn)?;
        let failed = |step: &'static str, message: String| {
            let e = AwsError::RotationFailed {
                secret_arn: arn.to_string(),
                step,
                message,
                retry: format!(" --client-request-token {token}"),
            };
            self.record_rotation(caller, via, arn, token, Some(step));
            e
        };
        for step in STEPS {
            if let Err(why) = self.run_step(caller, &command, step, arn, token) {
                return Err(failed(step, why));
            }
        }
        let finished = self.store.mutate(self.now(), |body| {
            let Some(s) = body.secrets.get_mut(arn) else {
                return Ok(false);
            };
            let on_token = s
                .versions
                .get(token)
                .is_some_and(|v| v.stages.iter().any(|x| x == AWSCURRENT));
            if !on_token {
                return Ok(false);
            }
            if let Some(v) = s.versions.get_mut(token) {
                v.stages.retain(|x| x != AWSPENDING);
            }
            let now = self.kms.clock().now();
            s.rotation.last_rotated = Some(now);
            s.rotation.next_rotation = match &s.rotation.rules {
                Some(rules) if s.rotation.enabled => next_due(rules, now)?,
                _ => None,
            };
            s.last_changed = now;
            Ok(true)
        })?;
        if !finished {
            return Err(failed(
                "finishSecret",
                format!(
                    "after finishSecret, AWSCURRENT is not on version {token}: the command must move it there (update-secret-version-stage --version-stage AWSCURRENT --move-to-version-id {token} --remove-from-version-id <current version>)"
                ),
            ));
        }
        self.record_rotation(caller, via, arn, token, None);
        Ok(())
    }

    /// Makes version `token` of `arn` an AWSPENDING copy of its AWSCURRENT value, for a
    /// test of the rotation; false when the secret has no value yet.
    fn pending_copy(&self, c: &Call, arn: &str, token: &str) -> Result<bool, AwsError> {
        self.store.mutate(self.now(), |body| {
            let mut s = body
                .secrets
                .get(arn)
                .cloned()
                .ok_or_else(|| errors::not_found(arn))?;
            let Some((vid, v)) = s.version_with(AWSCURRENT) else {
                return Ok(false);
            };
            let plain = super::envelope::open(&self.kms, c.caller, arn, vid, &v.sealed)?;
            self.add_version(c, body, &mut s, token, &plain, &[AWSPENDING], self.now())?;
            body.secrets.insert(arn.to_string(), s);
            Ok(true)
        })
    }

    /// The secret's rotation command.
    fn command_of(&self, arn: &str) -> Result<String, AwsError> {
        let body = self.load()?;
        let s = body
            .secrets
            .get(arn)
            .ok_or_else(|| errors::not_found(arn))?;
        s.rotation
            .command
            .clone()
            .ok_or_else(|| errors::invalid_request(format!("secret {arn} has no rotation command")))
    }

    /// The trail's RotationSucceeded or RotationFailed event (`failed_at`: the step).
    fn record_rotation(
        &self,
        caller: &Caller,
        via: Via,
        arn: &str,
        token: &str,
        failed_at: Option<&'static str>,
    ) {
        let call = Call {
            caller,
            operation: if failed_at.is_some() {
                "RotationFailed"
            } else {
                "RotationSucceeded"
            },
            via,
            request_id: crate::kms::event::fast_uuid(),
            request_parameters: json!({"secretId": arn, "clientRequestToken": token}),
            conditions: Vec::new(),
            recorded: Default::default(),
        };
        let outcome = match failed_at {
            None => Ok(json!({"ARN": arn, "VersionId": token})),
            Some(step) => Err(errors::invalid_request(format!(
                "the rotation failed at {step}"
            ))),
        };
        if let Err(e) = self.record(&call, outcome.as_ref()) {
            eprintln!("cryptvol: secret {arn}: the rotation's event could not be recorded: {e}");
        }
    }
}
