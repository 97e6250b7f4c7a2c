//! Turning flag values into data: blobs and plaintexts (`fileb://F` or base64), encryption
//! contexts (`k=v,k=v` or JSON), tags, and passphrases from files or the terminal.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use super::exit::CliError;
use crate::aws::AwsError;
use crate::aws::b64;
use crate::crypto::SecretBytes;
use crate::kms::{EncryptionContext, KeyRef};

/// Reads a binary flag value: `fileb://PATH` is the file's raw bytes, anything else is
/// base64 (as the AWS CLI v2). Returned as secret because plaintexts come this way.
pub fn binary_value(flag: &'static str, value: &str) -> Result<SecretBytes, CliError> {
    if let Some(path) = value.strip_prefix("fileb://") {
        return read_file(Path::new(path)).map(SecretBytes::new);
    }
    if value.starts_with("file://") {
        return Err(CliError::bad(
            flag,
            "use fileb://PATH for binary data (file:// is for text)",
        ));
    }
    b64::decode(value).map(SecretBytes::new).map_err(|_| {
        CliError::bad(
            flag,
            "not base64; pass raw bytes from a file with fileb://PATH",
        )
    })
}

/// Reads a text flag value: `file://PATH` is the file's contents, anything else is the
/// value itself (as the AWS CLI's `--policy` and `--policy-document`).
pub fn text_value(flag: &'static str, value: &str) -> Result<String, CliError> {
    let Some(path) = value.strip_prefix("file://") else {
        return Ok(value.to_string());
    };
    String::from_utf8(read_file(Path::new(path))?)
        .map_err(|_| CliError::bad(flag, format!("{path} is not UTF-8 text")))
}

pub fn read_file(path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|source| CliError::InputFile {
        path: path.to_path_buf(),
        source,
    })
}

/// `k=v[,k=v...]` or a JSON object `{"k":"v"}`; absent means empty.
pub fn encryption_context(
    flag: &'static str,
    value: Option<&str>,
) -> Result<EncryptionContext, CliError> {
    let Some(value) = value else {
        return Ok(EncryptionContext::new());
    };
    let v = value.trim();
    let pairs: Vec<(String, String)> = if v.starts_with('{') {
        let map: std::collections::BTreeMap<String, serde_json::Value> = serde_json::from_str(v)
            .map_err(|e| CliError::bad(flag, format!("not a JSON object: {e}")))?;
        map.into_iter()
            .map(|(k, val)| match val {
                serde_json::Value::String(s) => Ok((k, s)),
                _ => Err(CliError::bad(
                    flag,
                    format!("value of '{k}' must be a string"),
                )),
            })
            .collect::<Result<_, _>>()?
    } else {
        v.split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| CliError::bad(flag, format!("'{p}' is not KEY=VALUE")))
            })
            .collect::<Result<_, _>>()?
    };
    EncryptionContext::from_pairs(pairs).map_err(|e| match e {
        AwsError::Validation { message, .. } => CliError::bad(flag, message),
        other => other.into(),
    })
}

/// `k=v` tags, as `--tag` takes them (also AWS's `TagKey=k,TagValue=v`).
pub fn tag(value: &str) -> Result<(String, String), CliError> {
    if let Some(rest) = value.strip_prefix("TagKey=")
        && let Some((k, v)) = rest.split_once(",TagValue=")
    {
        return Ok((k.to_string(), v.to_string()));
    }
    value
        .split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| CliError::bad("--tag", format!("'{value}' is not KEY=VALUE")))
}

pub fn key_ref(value: &str) -> Result<KeyRef, CliError> {
    Ok(KeyRef::parse(value)?)
}

/// A passphrase from a file (`kms::datadir::read_passphrase_file`), with the CLI's errors.
pub fn passphrase_from_file(path: &Path) -> Result<SecretBytes, CliError> {
    crate::datadir::read_passphrase_file(path).map_err(|e| match e {
        AwsError::PassphraseFile { path, source } => CliError::InputFile { path, source },
        AwsError::Validation { message, .. } => CliError::bad("--passphrase-file", message),
        other => other.into(),
    })
}

/// Where a region passphrase comes from when one is needed.
pub struct PassphraseSource {
    pub file: Option<PathBuf>,
    pub region: String,
}

impl PassphraseSource {
    /// The file if given; else a prompt on the terminal; else the "pass a file" error.
    pub fn get(&self) -> Result<SecretBytes, AwsError> {
        if let Some(f) = &self.file {
            return passphrase_from_file(f).map_err(|e| match e {
                CliError::Kms(k) => k,
                CliError::InputFile { path, source } => AwsError::PassphraseFile { path, source },
                other => AwsError::validation("--passphrase-file", other.to_string()),
            });
        }
        if std::io::stdin().is_terminal() {
            let p = rpassword::prompt_password(format!("Passphrase for region {}: ", self.region))
                .map_err(|e| AwsError::io("cannot read the passphrase from", "/dev/tty", e))?;
            return Ok(SecretBytes::new(p.into_bytes()));
        }
        Err(AwsError::PassphraseRequired {
            region: self.region.clone(),
        })
    }
}

/// `--max-bandwidth RATE` when given.
pub fn parse_rate_opt(s: Option<&str>) -> Result<Option<u64>, CliError> {
    s.map(parse_rate).transpose()
}

/// `--max-bandwidth RATE`: bytes per second with an optional K/M/G suffix (binary), > 0.
pub fn parse_rate(s: &str) -> Result<u64, CliError> {
    match crate::volume::ids::parse_size(s) {
        Ok(r) if r > 0 => Ok(r),
        _ => Err(CliError::bad(
            "--max-bandwidth",
            format!("'{s}' is not a rate: give bytes per second, like 50M or 1G"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_forms() {
        let a =
            encryption_context("--encryption-context", Some("cryptvol:lineage=vol-1,b=2")).unwrap();
        let b = encryption_context(
            "--encryption-context",
            Some(r#"{"b":"2","cryptvol:lineage":"vol-1"}"#),
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.get("cryptvol:lineage"), Some("vol-1"));
        for bad in ["novalue", r#"{"a":1}"#] {
            assert!(
                matches!(
                    encryption_context("--encryption-context", Some(bad)),
                    Err(CliError::BadArgument {
                        flag: "--encryption-context",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        assert!(
            encryption_context("--encryption-context", None)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn binary_forms() {
        assert_eq!(
            binary_value("--plaintext", "aGVsbG8=").unwrap().expose(),
            b"hello"
        );
        assert!(matches!(
            binary_value("--plaintext", "not base64!"),
            Err(CliError::BadArgument {
                flag: "--plaintext",
                ..
            })
        ));
        assert!(matches!(
            binary_value("--plaintext", "fileb:///no/such/file"),
            Err(CliError::InputFile { .. })
        ));
    }

    #[test]
    fn tag_forms() {
        assert_eq!(
            tag("team=storage").unwrap(),
            ("team".into(), "storage".into())
        );
        assert_eq!(
            tag("TagKey=a,TagValue=b").unwrap(),
            ("a".into(), "b".into())
        );
        assert!(matches!(
            tag("x"),
            Err(CliError::BadArgument { flag: "--tag", .. })
        ));
    }
}
