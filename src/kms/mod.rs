//! The key management service: regions and their keystores, customer master keys and
//! their versions, aliases, rotation, data keys and ciphertext blobs (the AWS KMS model,
//! see docs/formats.md and docs/architecture.md "Keys").
//!
//! Higher layers reach keys only through [`KeyBackend`]; [`EmbeddedKms`] is the
//! implementation backed by the region's keystore file. Nothing here prints or exits.

pub mod api;

pub mod backend;
pub mod blob;

pub mod context;
pub mod embedded;
pub mod event;

pub mod ids;
pub mod keystore;
pub mod metering;
pub mod model;

pub mod init;
pub mod remote;

pub use backend::{DataKeySpec, KeyBackend};

pub use context::EncryptionContext;
pub use embedded::{CreateKeyRequest, EmbeddedKms, Session};

pub use ids::{AliasName, KeyId, KeyRef};
