//! The secrets core in one process: a fresh key-file region, its root as caller.

mod access;
mod attack;
mod lifecycle;
mod rotation;

use std::sync::Arc;

use serde_json::{Value, json};

use super::{SecretsManager, Via};
use crate::aws::{AwsError, Region};
use crate::iam::caller::Caller;
use crate::kms::embedded::EmbeddedKms;
use crate::sys::clock::Clock;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub sm: SecretsManager,
    pub root: Caller,
    pub kms: Arc<EmbeddedKms>,
}

pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let r = Region::parse("test-1").unwrap();
    crate::kms::init::init(dir.path(), &r, None, 0).unwrap();
    let mut no = || -> Result<crate::crypto::SecretBytes, AwsError> { panic!("no passphrase") };
    let kms = Arc::new(EmbeddedKms::open_region(dir.path(), &r, &mut no, Clock::System).unwrap());
    let root = Caller::local(crate::iam::Identity::root(kms.account().clone()));
    Fixture {
        sm: SecretsManager::open(kms.clone()).unwrap(),
        dir,
        root,
        kms,
    }
}

impl Fixture {
    pub fn call(&self, op: &str, req: Value) -> Result<Value, AwsError> {
        self.sm.call(&self.root, op, &req, Via::Cli)
    }

    pub fn ok(&self, op: &str, req: Value) -> Value {
        self.call(op, req).unwrap_or_else(|e| panic!("{op}: {e}"))
    }

    pub fn code(&self, op: &str, req: Value) -> &'static str {
        match self.call(op, req) {
            Ok(v) => panic!("{op} succeeded: {v}"),
            Err(e) => e.aws_code(),
        }
    }
}

pub fn token(n: u8) -> String {
    format!("{n:02}").repeat(16)
}

/// The region's trail, oldest first.
pub fn events(f: &Fixture) -> Vec<Value> {
    f.kms
        .audit_log()
        .events()
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .collect()
}

/// An IAM user of the account with one identity policy, as a caller.
pub fn user(f: &Fixture, name: &str, policy: Value) -> Caller {
    let store = crate::iam::IdentityStore::new(f.dir.path(), f.kms.account().clone());
    store
        .create(crate::iam::EntityKind::User, name, "", None)
        .unwrap();
    store
        .put_policy(crate::iam::EntityKind::User, name, "p", &policy.to_string())
        .unwrap();
    Caller::local(store.resolve_profile(Some(name)).unwrap())
}

impl Fixture {
    pub fn as_user(&self, who: &Caller, op: &str, req: Value) -> Result<Value, AwsError> {
        self.sm.call(who, op, &req, Via::Cli)
    }
}

pub fn _json() -> Value {
    json!({})
}
