//! Running a rotation command for one step: `CMD <Step> <SecretARN> <Token>` with the
//! step, secret and token in its environment, the data dir and region, the caller's CLI
//! profile (so its callbacks act as the caller, never more), and what the
//! [`SecretsManager`] was given (`with_command_env`: a passphrase file). Standard input
//! and output are closed; the last line of standard error is why a step failed. A step
//! that runs past [`STEP_TIMEOUT`] is killed.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::SecretsManager;
use crate::iam::Principal;
use crate::iam::caller::Caller;

/// How long one step may run before it is killed and the rotation fails.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(300);

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

impl SecretsManager {
    /// Runs one step; Err is why it failed (the last line the command wrote on stderr).
    pub(super) fn run_step(
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
}
