//! cryptvol: a key management service and encrypted block volumes for one machine.
//!
//! Layers, each a module that only uses the ones below it (see DESIGN.md):
//! - [`cli`]: commands, output formats, exit codes;
//! - [`kms`]: regions, keystores, keys, aliases, rotation, data keys;
//! - [`crypto`]: AES-256-GCM, key derivation, zeroizing key types;
//! - [`fsio`]: durable file writes and locks used by the layers that keep state.
#![deny(unsafe_code)]

pub mod cli;
pub mod crypto;
pub mod fsio;
pub mod fuse;
pub mod kms;
pub mod snapshot;
pub mod volume;
