//! Every `cryptvol secretsmanager` command, run as a process: the secret's life, versions
//! and staging labels, idempotent tokens, deletion and restore, tags, listing and paging,
//! random passwords, resource policies and keys, rotation through a local command
//! (immediate, failed, due), output formats, and no value ever written in the clear.

mod common;

#[path = "secretsmanager_cli/support.rs"]
mod support;

#[path = "secretsmanager_cli/access.rs"]
mod access;
#[path = "secretsmanager_cli/lifecycle.rs"]
mod lifecycle;
#[path = "secretsmanager_cli/listing.rs"]
mod listing;
#[path = "secretsmanager_cli/rotation.rs"]
mod rotation;
#[path = "secretsmanager_cli/versions.rs"]
mod versions;
