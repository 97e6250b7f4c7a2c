//! The key management service: each region's keystore, customer master keys and their
//! versions, aliases, grants, rotation, data keys and ciphertext blobs (the AWS KMS model,
//! see docs/formats.md and docs/architecture.md "Keys"), metering, creating a region
//! (`init`), and the remote client that speaks the AWS KMS protocol to another server.
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
pub mod init;
pub mod keystore;
pub mod metering;
pub mod model;
pub mod remote;
pub mod root_rotation;

pub use backend::{DataKeySpec, KeyBackend};
pub use context::EncryptionContext;
pub use embedded::{CreateKeyRequest, EmbeddedKms, Session};
pub use ids::{AliasName, KeyId, KeyRef};
