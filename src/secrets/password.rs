//! GetRandomPassword with AWS's options: 1 to 4096 characters (default 32) drawn
//! uniformly from the included classes (lowercase, uppercase, digits, AWS's punctuation,
//! optionally a space) less `ExcludeCharacters`; with `RequireEachIncludedType` (default)
//! at least one of each included class. The password is never in the trail.

use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::errors;
use super::request::Request;
use super::{Call, SecretsManager};
use crate::aws::AwsError;

const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &str = "0123456789";
const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// A uniform index below `n` from the system's random source (rejection sampling).
fn uniform(n: usize) -> usize {
    let n = n as u32;
    let zone = u32::MAX - (u32::MAX % n);
    loop {
        let x = u32::from_le_bytes(crate::crypto::random::array());
        if x < zone {
            return (x % n) as usize;
        }
    }
}

/// A password of `length` characters from `classes`, one of each at least if `each`.
pub fn generate(length: usize, classes: &[Vec<char>], each: bool) -> Zeroizing<String> {
    let all: Vec<char> = classes.iter().flatten().copied().collect();
    let mut chars: Zeroizing<Vec<char>> =
        Zeroizing::new((0..length).map(|_| all[uniform(all.len())]).collect());
    if each {
        // One position per class, distinct, each given a character of its class.
        let mut positions: Vec<usize> = (0..length).collect();
        for class in classes {
            let p = positions.swap_remove(uniform(positions.len()));
            chars[p] = class[uniform(class.len())];
        }
    }
    Zeroizing::new(chars.iter().collect())
}

impl SecretsManager {
    pub(super) fn get_random_password(&self, c: &Call, r: &Request) -> Result<Value, AwsError> {
        let length = r.int("PasswordLength", 1, 4096)?.unwrap_or(32) as usize;
        let exclude: Vec<char> = r
            .str_len("ExcludeCharacters", 0, 4096)?
            .unwrap_or("")
            .chars()
            .collect();
        let flag = |name: &str| r.bool(name).map(|b| b.unwrap_or(false));
        let mut classes: Vec<Vec<char>> = Vec::new();
        for (set, excluded) in [
            (LOWER, flag("ExcludeLowercase")?),
            (UPPER, flag("ExcludeUppercase")?),
            (DIGITS, flag("ExcludeNumbers")?),
            (PUNCTUATION, flag("ExcludePunctuation")?),
            (" ", !flag("IncludeSpace")?),
        ] {
            if excluded {
                continue;
            }
            let class: Vec<char> = set.chars().filter(|c| !exclude.contains(c)).collect();
            if !class.is_empty() {
                classes.push(class);
            }
        }
        let each = r.bool("RequireEachIncludedType")?.unwrap_or(true);
        if classes.is_empty() {
            return Err(errors::invalid_parameter(
                "The password can't be generated: every character is excluded",
            ));
        }
        if each && length < classes.len() {
            return Err(errors::invalid_parameter(format!(
                "PasswordLength {length} is too short to include one character of each of the {} included types (lengthen it or set RequireEachIncludedType to false)",
                classes.len()
            )));
        }
        self.authorized_account(c, "secretsmanager:GetRandomPassword")?;
        let password = generate(length, &classes, each);
        Ok(json!({ "RandomPassword": password.as_str() }))
    }
}
