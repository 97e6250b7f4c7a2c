//! Identities, as AWS IAM has them: the account root, users and roles, their inline
//! identity policies and access keys (the `cryptvol iam ...` commands), kept in
//! `<data dir>/iam.json`, and the [`Caller`] every KMS operation takes.
//!
//! IAM is global in AWS, so identities belong to the data dir's account, not to a region.
//! A caller is resolved to an [`Identity`]: who it is and its parsed identity policies,
//! which is all that policy evaluation needs from this module.
//!
//! Files: `records` is the file's shape, `identity` the resolved principal and IAM's
//! names, `store` the file's reads and changes, `access_keys` the sealed secrets,
//! `caller` who makes a call and how, `sessions` STS's temporary credentials.

mod access_keys;
pub mod caller;
mod identity;
mod records;
pub mod sessions;
mod store;

pub use caller::Caller;
pub use identity::*;
pub use records::*;
pub use store::IdentityStore;
