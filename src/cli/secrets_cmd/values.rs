//! Secret values from flags and files, and the JSON that carries them. Every buffer that
//! holds a value is zeroizing, and an error names the flag or the file, never the value.

use std::path::Path;

use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::aws::b64;
use crate::cli::exit::CliError;

/// A JSON request or answer that may hold a secret value: its strings are cleared when it
/// is dropped.
#[derive(Debug, Default)]
pub struct Scrubbed(pub Value);

impl Drop for Scrubbed {
    fn drop(&mut self) {
        scrub(std::mem::take(&mut self.0));
    }
}

/// Clears every string of `v` (a value, or base64 of one) before it is freed.
pub fn scrub(v: Value) {
    match v {
        Value::String(s) => drop(Zeroizing::new(s)),
        Value::Array(items) => items.into_iter().for_each(scrub),
        Value::Object(map) => map.into_iter().for_each(|(_, x)| scrub(x)),
        _ => {}
    }
}

/// A request being built: AWS member names to values; absent options are left out.
#[derive(Default)]
pub struct Request(Map<String, Value>);

impl Request {
    pub fn new() -> Request {
        Request::default()
    }

    pub fn set(mut self, member: &str, v: impl Into<Value>) -> Request {
        self.0.insert(member.to_string(), v.into());
        self
    }

    pub fn opt<T: Into<Value>>(self, member: &str, v: Option<T>) -> Request {
        match v {
            Some(v) => self.set(member, v),
            None => self,
        }
    }

    /// A list member, left out when empty.
    pub fn list(self, member: &str, items: Vec<String>) -> Request {
        if items.is_empty() {
            return self;
        }
        self.set(member, items)
    }

    pub fn done(self) -> Result<Scrubbed, CliError> {
        Ok(Scrubbed(Value::Object(self.0)))
    }
}

/// `--secret-string` and `--secret-binary` as the request's `SecretString` (text) and
/// `SecretBinary` (base64), in zeroizing buffers.
#[derive(Default)]
pub struct SecretValue {
    string: Option<Zeroizing<String>>,
    binary_b64: Option<Zeroizing<String>>,
}

impl SecretValue {
    /// Reads the flags' values; `string` and `binary` are moved into zeroizing buffers at
    /// once. `file://PATH` (either flag) reads a file's text, `fileb://PATH` (for
    /// `--secret-binary`) its raw bytes; any other value is the value itself.
    pub fn read(string: Option<String>, binary: Option<String>) -> Result<SecretValue, CliError> {
        let string = string.map(Zeroizing::new);
        let binary = binary.map(Zeroizing::new);
        let mut v = SecretValue::default();
        if let Some(s) = string {
            v.string = Some(match file_of(&s) {
                Some(path) => text_file("--secret-string", path)?,
                None => s,
            });
        }
        if let Some(b) = binary {
            let bytes = match file_of(&b) {
                Some(path) => read(path)?,
                None => Zeroizing::new(b.as_bytes().to_vec()),
            };
            v.binary_b64 = Some(Zeroizing::new(b64::encode(&bytes)));
        }
        Ok(v)
    }

    /// Adds `SecretString` and/or `SecretBinary` to `r` (copies the [`Scrubbed`] clears).
    pub fn into_request(self, r: Request) -> Request {
        let r = r.opt("SecretString", self.string.as_ref().map(|s| s.as_str()));
        r.opt("SecretBinary", self.binary_b64.as_ref().map(|s| s.as_str()))
    }
}

/// The path of a `file://PATH` or `fileb://PATH` value.
fn file_of(value: &str) -> Option<&Path> {
    value
        .strip_prefix("fileb://")
        .or_else(|| value.strip_prefix("file://"))
        .map(Path::new)
}

/// A file's bytes, named in the error if it cannot be read.
pub fn read(path: &Path) -> Result<Zeroizing<Vec<u8>>, CliError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|source| CliError::InputFile {
            path: path.to_path_buf(),
            source,
        })
}

/// A file's UTF-8 text; an error names the file, never its content.
fn text_file(flag: &'static str, path: &Path) -> Result<Zeroizing<String>, CliError> {
    let mut bytes = read(path)?;
    match std::str::from_utf8(&bytes) {
        Ok(_) => Ok(Zeroizing::new(
            String::from_utf8(std::mem::take(&mut *bytes)).expect("checked"),
        )),
        Err(_) => Err(CliError::bad(
            flag,
            format!(
                "{} is not UTF-8 text (pass binary values with --secret-binary fileb://PATH)",
                path.display()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(string: Option<&str>, binary: Option<&str>) -> Value {
        let v = SecretValue::read(string.map(String::from), binary.map(String::from)).unwrap();
        let r = v.into_request(Request::new()).done().unwrap();
        r.0.clone()
    }

    #[test]
    fn value_forms() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("b");
        std::fs::write(&bin, [0u8, 0xff, 7]).unwrap();
        let txt = dir.path().join("t");
        std::fs::write(&txt, "{\"pw\":\"x\"}\n").unwrap();
        assert_eq!(request(Some("plain"), None)["SecretString"], "plain");
        assert_eq!(
            request(Some(&format!("file://{}", txt.display())), None)["SecretString"],
            "{\"pw\":\"x\"}\n"
        );
        assert_eq!(
            request(None, Some(&format!("fileb://{}", bin.display())))["SecretBinary"],
            b64::encode(&[0, 0xff, 7])
        );
        assert_eq!(
            request(None, Some("raw text"))["SecretBinary"],
            b64::encode(b"raw text")
        );
        assert!(request(None, None).as_object().unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_file_not_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad");
        std::fs::write(&bad, b"hunter2-secret\xff").unwrap();
        let e = SecretValue::read(Some(format!("file://{}", bad.display())), None)
            .err()
            .unwrap();
        let msg = e.to_string();
        assert!(msg.contains(&bad.display().to_string()), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
        let missing = dir.path().join("missing");
        let e = SecretValue::read(None, Some(format!("fileb://{}", missing.display())))
            .err()
            .unwrap();
        assert!(matches!(e, CliError::InputFile { .. }), "{e}");
    }
}
