//! `cryptvol kms serve`: the AWS KMS JSON 1.1 protocol over HTTP(S), so that the AWS CLI,
//! boto3, any AWS SDK, and cryptvol's own remote key backend can use a cryptvol KMS.
//!
//! `POST /` with `X-Amz-Target: TrentService.<Operation>` and a JSON body; every request
//! is authenticated with AWS Signature Version 4 against the access keys of the data dir's
//! users (`cryptvol iam create-access-key`), and the region is the one in the signature's
//! credential scope. The authenticated user is the caller that key policies, identity
//! policies and the audit trail see, with the client's address as `sourceIPAddress`.
//! Temporary credentials (`ASIA…` with `X-Amz-Security-Token`) authenticate as the user or
//! role session their token names (`identities`), and the same port answers AWS STS's
//! Query protocol (`sts`: GetCallerIdentity, GetSessionToken, AssumeRole), and AWS Secrets
//! Manager's (`secrets`: `X-Amz-Target: secretsmanager.<Operation>`, signed for
//! `secretsmanager`, answered by the region's `crate::secrets::SecretsManager`). Every
//! region the server opens runs its due secret rotations until it stops (`rotations`).
//!
//! Layers: `listener` (TCP/TLS, the connection cap, shutdown) → `conn` (one connection
//! and its timeouts) → `http` (SigV4, quotas, the AWS error envelope) → `dispatch` (one
//! operation → one `EmbeddedKms` call; `secrets`: one `SecretsManager` call). KMS calls are blocking (file locks, appends), so
//! they run on tokio's blocking pool. Bodies live in zeroizing memory (`body`); refusals
//! are audited within a budget (`refusals`); quotas are token buckets (`ratelimit`).

mod body;
mod conn;
#[cfg(test)]
mod custom_key_store_attack_tests;
mod custom_key_stores;
mod dispatch;
mod grants;
mod http;
mod identities;
mod limits;
mod listener;
mod ratelimit;
mod refusals;
mod rotations;
mod secrets;
#[cfg(test)]
mod secrets_tests;
mod sts;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::aws::{AwsError, Region};

/// Largest request body accepted (AWS's KMS requests are a few KiB at most).
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (printed on stdout)
    #[arg(long, default_value = "127.0.0.1:9400", value_name = "ADDR:PORT")]
    pub listen: String,
    /// PEM certificate chain: serve HTTPS
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Largest request body, in bytes
    #[arg(long, default_value_t = DEFAULT_MAX_BODY)]
    pub max_body_bytes: usize,
    /// Most connections open at once; more are answered 503 and closed
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000), value_name = "N")]
    pub max_connections: u32,
    /// Seconds a client has to finish its TLS handshake
    #[arg(long, default_value_t = 10, value_parser = seconds, value_name = "SECS")]
    pub tls_handshake_timeout: u64,
    /// Seconds a connection has to send a request's head once it is ready for one
    #[arg(long, default_value_t = 20, value_parser = seconds, value_name = "SECS")]
    pub header_timeout: u64,
    /// Seconds a request has to send its whole body
    #[arg(long, default_value_t = 20, value_parser = seconds, value_name = "SECS")]
    pub body_timeout: u64,
    /// Seconds a connection may stay open without a request in flight
    #[arg(long, default_value_t = 60, value_parser = seconds, value_name = "SECS")]
    pub idle_timeout: u64,
    /// Cryptographic requests per second per access key and region (one shared quota)
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub crypto_rate: u32,
    /// Requests per second per access key and region, for each management operation
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub management_rate: u32,
    /// Refused requests recorded in the audit trail per second (beyond: counted)
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub refused_audit_rate: u32,
}

/// A timeout flag: whole seconds, 1 to a day.
fn seconds(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if (1..=86_400).contains(&n) => Ok(n),
        _ => Err(format!("'{s}' is not a number of seconds from 1 to 86400")),
    }
}

/// Runs the server until SIGTERM or SIGINT, then finishes the requests in flight.
/// Refused requests that name no usable region are recorded in `home_region`'s trail.
pub fn serve(
    data_dir: &Path,
    passphrase_file: Option<&Path>,
    home_region: &Region,
    args: ServeArgs,
) -> Result<(), AwsError> {
    // Small blocks from mimalloc from here on: a fifth less CPU per request (why only
    // here, and only small blocks: `sys::allocator`). No effect unless the binary's
    // allocator is `SplitAllocator` (src/main.rs).
    crate::sys::allocator::small_blocks_from_mimalloc();
    let limits = http::Limits {
        max_body: args.max_body_bytes,
        body_timeout: Duration::from_secs(args.body_timeout),
        crypto_rate: args.crypto_rate,
        management_rate: args.management_rate,
        refused_audit_rate: args.refused_audit_rate,
    };
    let state = http::State::new(data_dir, passphrase_file, home_region, &limits)?;
    listener::run(state, &args)
}
