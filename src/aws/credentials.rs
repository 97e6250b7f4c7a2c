//! The AWS credential chain, as the AWS CLI (botocore) resolves it, for every client
//! cryptvol has of an AWS-protocol service (the remote KMS, the snapshot store):
//!
//! 1. the environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`
//!    (and `AWS_CREDENTIAL_EXPIRATION`), unless a profile is named explicitly
//!    (`--aws-profile`), which, as in the CLI, skips them;
//! 2. the profile's static keys in the shared credentials file
//!    (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`, `[name]` sections);
//! 3. its `credential_process` (either file): run without a shell, its JSON read;
//! 4. its static keys in the config file (`AWS_CONFIG_FILE`, default `~/.aws/config`,
//!    `[profile name]` sections and `[default]`).
//!
//! The profile is the explicit argument, else `AWS_PROFILE`, else `default`. The region
//! is `AWS_REGION`, else `AWS_DEFAULT_REGION`, else the profile's `region`. Everything the
//! chain reads comes through [`Sources`], so tests give it their own environment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;
use zeroize::Zeroizing;

use super::error::{AwsError, Result};

/// Signing credentials: an access key, and a session token for temporary ones.
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Zeroizing<String>,
    pub session_token: Option<Zeroizing<String>>,
    /// When temporary credentials stop working, in Unix seconds.
    pub expiration: Option<i64>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The credentials as the SigV4 signer takes them.
    pub fn sigv4(&self) -> super::sigv4::Credentials<'_> {
        super::sigv4::Credentials {
            access_key_id: &self.access_key_id,
            secret_access_key: &self.secret_access_key,
            session_token: self.session_token.as_ref().map(|t| t.as_str()),
        }
    }
}

/// Why the chain found no usable credentials; each has its own exit code in the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialProblem {
    /// Nothing anywhere in the chain.
    NotFound,
    /// The named profile is in neither file.
    NoSuchProfile,
    /// Half a key, or a `credential_process` that cannot be split.
    Malformed,
    /// The credentials' expiration has passed.
    Expired,
    /// `credential_process` failed, or printed something that is not credentials.
    Process,
    /// A profile that needs what cryptvol does not do (assume role, SSO, web identity).
    Unsupported,
}

/// The variables the chain reads, and the time; `from_process` takes them from this
/// process, tests build their own.
pub struct Sources {
    vars: BTreeMap<String, Zeroizing<String>>,
    now: i64,
}

/// Every variable the chain reads.
const VARS: [&str; 11] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_CREDENTIAL_EXPIRATION",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "HOME",
    "PATH",
];

impl Sources {
    pub fn from_process(now: i64) -> Sources {
        let vars = VARS
            .iter()
            .filter_map(|k| Some((k.to_string(), Zeroizing::new(std::env::var(k).ok()?))))
            .collect();
        Sources { vars, now }
    }

    pub fn new<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>, now: i64) -> Sources {
        let vars = vars
            .into_iter()
            .map(|(k, v)| (k.to_string(), Zeroizing::new(v.to_string())))
            .collect();
        Sources { vars, now }
    }

    fn var(&self, k: &str) -> Option<&str> {
        self.vars
            .get(k)
            .map(|v| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn file(&self, var: &str, default: &str) -> Option<PathBuf> {
        self.var(var)
            .map(PathBuf::from)
            .or_else(|| self.var("HOME").map(|h| Path::new(h).join(default)))
    }
}

/// What [`resolve_with`] found: the credentials, the profile they came from, its region.
#[derive(Debug)]
pub struct Resolved {
    pub credentials: Credentials,
    pub profile: String,
    pub region: Option<String>,
}

/// The chain, from this process's environment, for `profile` (`--aws-profile`).
pub fn resolve(profile: Option<&str>) -> Result<Credentials> {
    resolve_with(&Sources::from_process(now()), profile).map(|r| r.credentials)
}

/// The chain and the region of the profile, from this process's environment.
pub fn resolve_with_region(profile: Option<&str>) -> Result<Resolved> {
    resolve_with(&Sources::from_process(now()), profile)
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn err(problem: CredentialProblem, message: String) -> AwsError {
    AwsError::Credentials { problem, message }
}

/// One shared file, read: its path and its profiles' `key = value` pairs.
struct SharedFile {
    path: PathBuf,
    profiles: BTreeMap<String, BTreeMap<String, Zeroizing<String>>>,
}

impl SharedFile {
    /// `None` when the file does not exist. `config` names its sections `[profile NAME]`.
    fn load(path: Option<PathBuf>, config: bool) -> Result<Option<SharedFile>> {
        let Some(path) = path else { return Ok(None) };
        let text = match std::fs::read(&path) {
            Ok(b) => Zeroizing::new(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(AwsError::Io {
                    action: "cannot read the AWS shared file",
                    path,
                    hint: " (check its mode, or point AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE elsewhere)",
                    source,
                });
            }
        };
        let Ok(text) = std::str::from_utf8(&text) else {
            return Err(err(
                CredentialProblem::Malformed,
                format!("{} is not UTF-8 text: fix or replace it", path.display()),
            ));
        };
        Ok(Some(SharedFile {
            profiles: parse_ini(text, config),
            path,
        }))
    }

    fn profile(&self, name: &str) -> Option<&BTreeMap<String, Zeroizing<String>>> {
        self.profiles.get(name)
    }
}

/// The profiles of an AWS shared file: `[name]` sections (in the config file `[profile
/// name]`, and `[default]`), `key = value` lines with lowercase keys; `#` and `;` start
/// comment lines; indented lines continue a nested setting and are skipped, as are other
/// sections (`[sso-session x]`, `[services x]`).
fn parse_ini(text: &str, config: bool) -> BTreeMap<String, BTreeMap<String, Zeroizing<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Zeroizing<String>>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(inner) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let inner = inner.trim();
            current = if !config {
                Some(inner.to_string())
            } else if inner == "default" {
                Some("default".to_string())
            } else {
                inner
                    .strip_prefix("profile")
                    .filter(|rest| rest.starts_with([' ', '\t']))
                    .map(|rest| rest.trim().to_string())
            };
            if let Some(name) = &current {
                out.entry(name.clone()).or_default();
            }
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            continue;
        }
        if let (Some(name), Some((k, v))) = (&current, line.split_once('=')) {
            out.entry(name.clone()).or_default().insert(
                k.trim().to_ascii_lowercase(),
                Zeroizing::new(v.trim().to_string()),
            );
        }
    }
    out
}

/// The chain, from `src`. See the module documentation for the order.
pub fn resolve_with(src: &Sources, profile: Option<&str>) -> Result<Resolved> {
    let explicit = profile.filter(|p| !p.is_empty());
    let named = explicit.or(src.var("AWS_PROFILE"));
    let name = named.unwrap_or("default").to_string();
    let creds_file = SharedFile::load(
        src.file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials"),
        false,
    )?;
    let config_file = SharedFile::load(src.file("AWS_CONFIG_FILE", ".aws/config"), true)?;
    let in_creds = creds_file.as_ref().and_then(|f| f.profile(&name));
    let in_config = config_file.as_ref().and_then(|f| f.profile(&name));
    let region = src
        .var("AWS_REGION")
        .or(src.var("AWS_DEFAULT_REGION"))
        .map(str::to_string)
        .or_else(|| {
            [in_config, in_creds]
                .into_iter()
                .flatten()
                .find_map(|p| p.get("region").filter(|r| !r.is_empty()))
                .map(|r| r.to_string())
        });
    let done = |credentials: Credentials| -> Result<Resolved> {
        if let Some(t) = credentials.expiration
            && t <= src.now
        {
            return Err(err(
                CredentialProblem::Expired,
                format!(
                    "the AWS credentials of access key {} expired at {}: get fresh ones (a new session token, or the credential source of profile '{name}')",
                    credentials.access_key_id,
                    crate::sys::clock::format_time(t)
                ),
            ));
        }
        Ok(Resolved {
            credentials,
            profile: name.clone(),
            region: region.clone(),
        })
    };

    // 1. The environment, unless a profile was named explicitly.
    if explicit.is_none() {
        match (
            src.var("AWS_ACCESS_KEY_ID"),
            src.var("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Some(id), Some(secret)) => {
                let expiration = match src.var("AWS_CREDENTIAL_EXPIRATION") {
                    Some(t) => Some(parse_time(t).ok_or_else(|| {
                        err(
                            CredentialProblem::Malformed,
                            format!("AWS_CREDENTIAL_EXPIRATION '{t}' is not an RFC 3339 time (like 2026-12-01T00:00:00Z): fix or unset it"),
                        )
                    })?),
                    None => None,
                };
                return done(Credentials {
                    access_key_id: id.to_string(),
                    secret_access_key: Zeroizing::new(secret.to_string()),
                    session_token: src
                        .var("AWS_SESSION_TOKEN")
                        .map(|t| Zeroizing::new(t.to_string())),
                    expiration,
                });
            }
            (Some(_), None) | (None, Some(_)) => {
                let missing = if src.var("AWS_ACCESS_KEY_ID").is_some() {
                    "AWS_SECRET_ACCESS_KEY"
                } else {
                    "AWS_ACCESS_KEY_ID"
                };
                return Err(err(
                    CredentialProblem::Malformed,
                    format!(
                        "half an AWS access key in the environment: {missing} is not set: set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither"
                    ),
                ));
            }
            (None, None) => {}
        }
    }

    let show = |f: &Option<SharedFile>, var: &str, default: &str| match f {
        Some(f) => f.path.display().to_string(),
        None => src
            .file(var, default)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("~/{default}")),
    };
    let creds_path = show(
        &creds_file,
        "AWS_SHARED_CREDENTIALS_FILE",
        ".aws/credentials",
    );
    let config_path = show(&config_file, "AWS_CONFIG_FILE", ".aws/config");
    if in_creds.is_none() && in_config.is_none() {
        return Err(match named {
            Some(p) => err(
                CredentialProblem::NoSuchProfile,
                format!(
                    "AWS profile '{p}' is in neither {creds_path} nor {config_path}: add a [{p}] section to the first (or [profile {p}] to the second), or name another with --aws-profile / AWS_PROFILE"
                ),
            ),
            None => err(
                CredentialProblem::NotFound,
                format!(
                    "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), add a [default] profile to {creds_path} or {config_path}, or name one with --aws-profile (a cryptvol server makes keys with `cryptvol iam create-access-key`)"
                ),
            ),
        });
    }

    // 2. Static keys in the credentials file.
    if let (Some(p), Some(f)) = (in_creds, &creds_file)
        && let Some(c) = static_keys(p, &name, &f.path)?
    {
        return done(c);
    }
    // 3. credential_process, from either file (the credentials file wins).
    for (p, f) in [(in_creds, &creds_file), (in_config, &config_file)] {
        if let (Some(p), Some(f)) = (p, f)
            && let Some(cmd) = p.get("credential_process").filter(|c| !c.is_empty())
        {
            return done(run_process(cmd, &name, &f.path, src)?);
        }
    }
    // 4. Static keys in the config file.
    if let (Some(p), Some(f)) = (in_config, &config_file)
        && let Some(c) = static_keys(p, &name, &f.path)?
    {
        return done(c);
    }
    for p in [in_config, in_creds].into_iter().flatten() {
        for (setting, what) in [
            ("role_arn", "assume role"),
            ("sso_session", "IAM Identity Center (SSO)"),
            ("sso_start_url", "IAM Identity Center (SSO)"),
            ("web_identity_token_file", "web identity"),
            ("credential_source", "a credential source"),
        ] {
            if p.contains_key(setting) {
                return Err(err(
                    CredentialProblem::Unsupported,
                    format!(
                        "AWS profile '{name}' uses {setting} ({what}), which cryptvol does not resolve: give it a credential_process such as `aws configure export-credentials --profile {name} --format process`, or static keys"
                    ),
                ));
            }
        }
    }
    Err(err(
        CredentialProblem::NotFound,
        format!(
            "AWS profile '{name}' has no credentials in {creds_path} or {config_path}: add aws_access_key_id and aws_secret_access_key, or a credential_process"
        ),
    ))
}

/// `aws_access_key_id` / `aws_secret_access_key` (/ `aws_session_token`) of a profile;
/// `None` when it has neither key; half a key is an error naming the file.
fn static_keys(
    p: &BTreeMap<String, Zeroizing<String>>,
    name: &str,
    path: &Path,
) -> Result<Option<Credentials>> {
    let get = |k: &str| p.get(k).filter(|v| !v.is_empty());
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(id), Some(secret)) => Ok(Some(Credentials {
            access_key_id: id.to_string(),
            secret_access_key: secret.clone(),
            session_token: get("aws_session_token").cloned(),
            expiration: None,
        })),
        (None, None) => Ok(None),
        (id, _) => {
            let missing = if id.is_some() {
                "aws_secret_access_key"
            } else {
                "aws_access_key_id"
            };
            Err(err(
                CredentialProblem::Malformed,
                format!(
                    "AWS profile '{name}' in {} has half an access key: add {missing}",
                    path.display()
                ),
            ))
        }
    }
}

/// RFC 3339 (`2026-12-01T00:00:00Z`) to Unix seconds.
fn parse_time(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

/// What a `credential_process` prints (the SDKs' format, Version 1).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ProcessOutput {
    version: Option<i64>,
    access_key_id: Option<String>,
    secret_access_key: Option<Zeroizing<String>>,
    session_token: Option<Zeroizing<String>>,
    expiration: Option<String>,
}

/// Runs a profile's `credential_process` as the SDKs do: split as a POSIX shell would
/// split words (no shell runs it), stdin and stderr passed through, stdout read as JSON.
/// Nothing the process printed on stdout appears in an error.
fn run_process(cmdline: &str, profile: &str, file: &Path, src: &Sources) -> Result<Credentials> {
    let file = file.display();
    let argv = split_command(cmdline).filter(|a| !a.is_empty()).ok_or_else(|| {
        err(
            CredentialProblem::Malformed,
            format!("the credential_process of AWS profile '{profile}' in {file} is empty or has an unclosed quote: fix it"),
        )
    })?;
    let program = &argv[0];
    let what = format!("the credential_process `{program}` of AWS profile '{profile}' ({file})");
    let mut cmd = Command::new(program);
    cmd.args(&argv[1..])
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(path) = src.var("PATH") {
        cmd.env("PATH", path);
    }
    let out = cmd.output().map_err(|e| {
        err(
            CredentialProblem::Process,
            format!("cannot run {what}: {e}: fix the command in that file"),
        )
    })?;
    let stdout = Zeroizing::new(out.stdout);
    if !out.status.success() {
        return Err(err(
            CredentialProblem::Process,
            format!(
                "{what} failed ({}; its own message, if any, is above): fix it, or the command in that file",
                out.status
            ),
        ));
    }
    let bad = |why: &str| {
        err(
            CredentialProblem::Process,
            format!(
                "{what} {why}: it must print {{\"Version\": 1, \"AccessKeyId\": ..., \"SecretAccessKey\": ..., \"SessionToken\": ..., \"Expiration\": ...}}"
            ),
        )
    };
    let parsed: ProcessOutput = serde_json::from_slice(&stdout)
        .map_err(|_| bad("printed something that is not JSON credentials"))?;
    match parsed.version {
        Some(1) => {}
        Some(v) => {
            return Err(bad(&format!(
                "printed credentials of Version {v}, and cryptvol reads Version 1"
            )));
        }
        None => return Err(bad("printed no Version")),
    }
    let (Some(id), Some(secret)) = (
        parsed.access_key_id.filter(|s| !s.is_empty()),
        parsed.secret_access_key.filter(|s| !s.is_empty()),
    ) else {
        return Err(bad("printed no AccessKeyId or no SecretAccessKey"));
    };
    let expiration = match parsed.expiration.as_deref() {
        Some(t) => Some(
            parse_time(t)
                .ok_or_else(|| bad("printed an Expiration that is not an RFC 3339 time"))?,
        ),
        None => None,
    };
    if let Some(t) = expiration
        && t <= src.now
    {
        return Err(err(
            CredentialProblem::Expired,
            format!(
                "{what} printed credentials that expired at {}: it must print fresh ones",
                crate::sys::clock::format_time(t)
            ),
        ));
    }
    Ok(Credentials {
        access_key_id: id,
        secret_access_key: secret,
        session_token: parsed.session_token.filter(|s| !s.is_empty()),
        expiration,
    })
}

/// Splits a command line into words as Python's `shlex.split` does (what the AWS CLI uses
/// for `credential_process`): whitespace separates words; `'...'` is literal; in `"..."`
/// a backslash escapes only `"` and `\`; outside quotes a backslash escapes any character.
/// `None` for an unclosed quote or a trailing backslash.
fn split_command(s: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\r' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => word.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            c @ ('"' | '\\') => word.push(c),
                            c => {
                                word.push('\\');
                                word.push(c);
                            }
                        },
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.push(chars.next()?);
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

#[cfg(test)]
#[path = "credentials_tests.rs"]
mod tests;
