//! cryptvol: a key management service and encrypted block volumes for one machine.
//!
//! Layers, each a module that only uses the ones below it (see DESIGN.md):
//! - [`cli`]: commands, output formats, exit codes;
//! - [`server`]: the AWS KMS protocol over HTTP(S) with SigV4 (`kms serve`);
//! - [`fuse`]: the FUSE file, the region daemon and its control socket, loop/mkfs/mount;
//! - [`snapshot`]: snapshot records, usage accounting, the re-encryption pipeline;
//! - [`volume`]: volume headers and keys, the thin pool, block I/O with AES-256-XTS;
//! - [`kms`]: regions, keystores, keys, aliases, rotation, data keys, policies,
//!   identities, the audit trail, metering, SigV4, `KeyBackend` (embedded and remote);
//! - [`crypto`]: AES-256-GCM, AES-256-XTS, key derivation, zeroizing key types, process
//!   hardening;
//! - [`fsio`]: durable file writes and locks used by the layers that keep state;
//! - [`sys`]: system call wrappers and external tools (for now, /proc/self/mountinfo).
#![deny(unsafe_code)]

pub mod audit;
pub mod aws;
pub mod cli;
pub mod crypto;
pub mod daemon;
pub mod datadir;
pub mod format_version;

pub mod iam;
pub mod kms;
pub mod policy;
pub mod server;
pub mod snapshot;
pub mod sys;
pub mod volume;
