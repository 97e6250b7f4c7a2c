//! cryptvol: a key management service and encrypted block volumes for one machine.
//!
//! One module per concept, in layers; a module uses only the layers below it
//! (docs/architecture.md, enforced by tests/layering.rs), highest first:
//! - [`cli`]: clap commands, printing, exit codes;
//! - [`server`]: the AWS KMS protocol over HTTP(S) with SigV4 (`kms serve`);
//! - [`daemon`]: the region daemon, the FUSE file, the control socket, the pool's owner;
//! - [`snapshot`]: snapshot records, the re-encrypting copy and rekeyed restore;
//! - [`volume`]: volume headers and keys, the thin pool, block I/O with AES-256-XTS;
//! - [`kms`]: `KeyBackend`, blobs, the keystore, the embedded KMS, the remote client;
//! - [`iam`], [`audit`]: identities, access keys and callers; the hash-chained trail;
//! - [`datadir`]: every path of the data dir, region configs, root keys;
//! - [`aws`]: region and account ids, `AwsError`, base64, SigV4;
//! - [`policy`], [`sys`]: the AWS policy language; system calls and external tools;
//! - [`crypto`], [`format_version`]: ciphers, derivation, zeroizing keys; the "newer
//!   format" message.
#![deny(unsafe_code)]

pub mod audit;
pub mod aws;
pub mod cli;
pub mod crypto;
pub mod daemon;
pub mod datadir;
pub mod format_version;
pub mod hsm;
pub mod iam;
pub mod kms;
pub mod policy;
pub mod secrets;
pub mod server;
pub mod snapshot;
pub mod sys;
pub mod volume;
