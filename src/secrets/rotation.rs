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

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::errors::{self, validation};
use super::lifecycle::arn_name;
use super::model::{AWSCURRENT, AWSPENDING, RotationRules};
use super::request::Request;
use super::schedule::next_due;
use super::{Call, RotationReport, SecretsManager, Via};
use crate::aws::AwsError;
use crate::iam::Principal;
use crate::iam::caller::Caller;
use crate::sys::fsio::FileLock;

/// AWS's four steps, in order.
pub const STEPS: [&str; 4] = ["createSecret", "setSecret", "testSecret", "finishSecret"];

/// How long one step may run before it is killed and the rotation fails.
const STEP_TIMEOUT: Duration = Duration::from_secs(300);

fn rules_of(r: &Request) -> Result<Option<RotationRules>, AwsError> {
    let Some(v) = r.get("RotationRules") else {
        return Ok(None);
    };
    let o = v
        .as_object()
        .ok_or_else(|| validation("RotationRules", "must be an object"))?;
    for k in o.keys() {
        if !["AutomaticallyAfterDays", "Duration", "ScheduleExpression"].contains(&k.as_str()) {
            return Err(validation("RotationRules", format!("unknown member {k}")));
        }
    }
    let days = match o.get("AutomaticallyAfterDays") {
        None | Some(Value::Null) => None,
        Some(d) => Some(
            d.as_u64()
                .and_then(|d| u32::try_from(d).ok())
                .ok_or_else(|| {
                    validation(
                        "RotationRules.AutomaticallyAfterDays",
                        "must be a whole number",
                    )
                })?,
        ),
    };
    let text = |k: &str| -> Result<Option<String>, AwsError> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(validation(
                &format!("RotationRules.{k}"),
                "must be a string",
            )),
        }
    };
    let rules = RotationRules {
        automatically_after_days: days,
        duration: text("Duration")?,
        schedule_expression: text("ScheduleExpression")?,
    };
    if let Some(d) = &rules.duration {
        check_duration(d, &rules)?;
    }
    next_due(&rules, 0)?;
    Ok(Some(rules))
}

/// A rotation window, `Nh` with N from 1 to 24 (AWS's form; with a `rate(N hours)`
/// schedule no longer than N hours).
fn check_duration(d: &str, rules: &RotationRules) -> Result<(), AwsError> {
    let hours = d
        .strip_suffix('h')
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| (1..=24).contains(n))
        .ok_or_else(|| {
            validation(
                "RotationRules.Duration",
                format!("'{d}' must be a number of hours from 1 to 24 followed by h, e.g. 3h"),
            )
        })?;
    let rate_hours = rules
        .schedule_expression
        .as_deref()
        .and_then(|e| e.strip_prefix("rate("))
        .and_then(|e| {
            e.strip_suffix(" hours)")
                .or_else(|| e.strip_suffix(" hour)"))
        })
        .and_then(|n| n.trim().parse::<u32>().ok());
    if let Some(r) = rate_hours
        && hours > r
    {
        return Err(validation(
            "RotationRules.Duration",
            format!("a window of {hours} h would run into the next rotation, {r} h later"),
        ));
    }
    Ok(())
}

/// The `--profile` the command's callbacks act as: the caller's (`root`, a user's name,
/// `role/NAME`); None for a caller the CLI cannot act as, whose rotation does not run.
fn profile_of(caller: &Caller) -> Option<String> {
    match &caller.identity.principal {
        Principal::Root => Some("root".into()),
        Principal::User { name, .. } => Some(name.clone()),
        Principal::Role { name, .. } => Some(format!("role/{name}")),
        Principal::Service { .. } => None,
    }
}

/// The version an unfinished rotation left AWSPENDING on (not AWSCURRENT's, not `token`).
fn unfinished(s: &super::model::SecretRecord, token: &str) -> Option<String> {
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
        let rules = rules_of(r)?;
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
            let arn = self.authorized_arn(c, body, id, "secretsmanager:RotateSecret")?;
            let s = body.secrets.get_mut(&arn).expect("found above");
            if s.deletion.is_some() {
                return Err(errors::marked_for_deletion(&arn));
            }
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
                });
            }
        }
        Ok(answer)
    }

    pub(super) fn cancel_rotate_secret(&self, c: &Call, r: &Request) -> Result<Value, AwsError> {
        let id = r.required_str("SecretId")?;
        self.change(c, |body, now| {
            let arn = self.authorized_arn(c, body, id, "secretsmanager:CancelRotateSecret")?;
            let s = body.secrets.get_mut(&arn).expect("found above");
            if s.deletion.is_some() {
                return Err(errors::marked_for_deletion(&arn));
            }
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
    fn rotate_now(
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

    /// Runs one step; Err is why it failed (the last line the command wrote on stderr).
    fn run_step(
        &self,
        caller: &Caller,
        command: &str,
        step: &str,
        arn: &str,
        token: &str,
    ) -> Result<(), String> {
        let dir = self.kms.region_dir();
        let mut cmd = Command::new(command);
        cmd.args([step, arn, token])
            .env("CRYPTVOL_ROTATION_STEP", step)
            .env("CRYPTVOL_SECRET_ID", arn)
            .env("CRYPTVOL_CLIENT_REQUEST_TOKEN", token)
            .env(crate::datadir::DATA_DIR_ENV, &dir.data_dir)
            .env(crate::datadir::REGION_ENV, dir.region.as_str())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &self.command_env {
            cmd.env(k, v);
        }
        let profile = profile_of(caller).ok_or_else(|| {
            format!(
                "{} cannot run a rotation command (no CLI profile acts as it)",
                caller.identity.arn()
            )
        })?;
        cmd.env("CRYPTVOL_PROFILE", profile);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run the rotation command {command}: {e}"))?;
        let mut stderr = child.stderr.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            buf
        });
        let deadline = Instant::now() + STEP_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(format!(
                        "{step} ran longer than {} s and was killed",
                        STEP_TIMEOUT.as_secs()
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => break Err(format!("cannot wait for the rotation command: {e}")),
            }
        };
        let err = reader.join().unwrap_or_default();
        let status = status?;
        if status.success() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&err);
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        Err(format!(
            "{command} {step} exited with {status}{}",
            if last.is_empty() {
                String::new()
            } else {
                format!(": {last}")
            }
        ))
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

    /// Rotates every secret whose rotation is enabled and due.
    pub(super) fn run_due_rotations(
        &self,
        caller: &Caller,
        via: Via,
    ) -> Result<Vec<RotationReport>, AwsError> {
        let now = self.now();
        let due: Vec<(String, String, String)> = self
            .load()?
            .secrets
            .values()
            .filter(|s| {
                s.deletion.is_none()
                    && s.rotation.enabled
                    && s.rotation.command.is_some()
                    && s.rotation.next_rotation.is_some_and(|t| t <= now)
            })
            .map(|s| {
                // A rotation left unfinished is retried with its own token, as AWS does.
                let token = unfinished(s, "").unwrap_or_else(crate::kms::event::fast_uuid);
                (s.arn.clone(), s.name.clone(), token)
            })
            .collect();
        let mut reports = Vec::new();
        let call = Call {
            caller,
            operation: "RotateSecret",
            via,
            request_id: crate::kms::event::fast_uuid(),
            request_parameters: Value::Null,
            conditions: Vec::new(),
            recorded: Default::default(),
        };
        let body = self.load()?;
        for (arn, name, token) in due {
            // Only a caller who may rotate the secret runs its command; the others' due
            // rotations are not theirs to run or to hear of.
            if self
                .authorized(&call, &body, &arn, "secretsmanager:RotateSecret")
                .is_err()
            {
                continue;
            }
            let error = self
                .rotate_now(caller, via, &arn, &token)
                .err()
                .map(|e| e.to_string());
            reports.push(RotationReport {
                arn,
                name,
                version_id: token,
                error,
            });
        }
        Ok(reports)
    }
}

/// Runs due rotations as the account root every `every` on a thread of its own, for as
/// long as `keep_going` says (the region daemon and `kms serve` run one per region).
/// Failures are logged to stderr without any value (the reports carry none).
pub fn spawn_due_rotations(
    sm: std::sync::Arc<SecretsManager>,
    every: Duration,
    keep_going: impl Fn() -> bool + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let root = Caller::local(crate::iam::Identity::root(sm.kms.account().clone()));
        while keep_going() {
            match sm.rotate_due(&root, Via::Cli) {
                Ok(reports) => {
                    for r in reports.iter().filter(|r| r.error.is_some()) {
                        eprintln!(
                            "cryptvol: due rotation of secret {} failed: {}",
                            r.arn,
                            r.error.as_deref().unwrap_or("")
                        );
                    }
                }
                Err(e) => eprintln!("cryptvol: due secret rotations: {e}"),
            }
            let until = Instant::now() + every;
            while Instant::now() < until && keep_going() {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    })
}
