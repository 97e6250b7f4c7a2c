//! `cryptvol kms serve`: the AWS KMS JSON 1.1 protocol over HTTP(S), so that the AWS CLI,
//! boto3, any AWS SDK, and cryptvol's own remote key backend can use a cryptvol KMS.
//!
//! `POST /` with `X-Amz-Target: TrentService.<Operation>` and a JSON body; every request
//! is authenticated with AWS Signature Version 4 against the access keys of the data dir's
//! users (`cryptvol iam create-access-key`), and the region is the one in the signature's
//! credential scope. The authenticated user is the caller that key policies, identity
//! policies and the audit trail see, with the client's address as `sourceIPAddress`.
//!
//! Layers: `listener` (TCP/TLS, connections, shutdown) → `http` (limits, SigV4, the AWS
//! error envelope) → `dispatch` (one operation → one `EmbeddedKms` call). KMS calls are
//! blocking (file locks, appends), so they run on tokio's blocking pool.

mod dispatch;
mod grants;
mod http;
mod identities;
mod listener;

use std::path::{Path, PathBuf};

use crate::kms::KmsError;

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
}

/// Runs the server until SIGTERM or SIGINT, then finishes the requests in flight.
pub fn serve(
    data_dir: &Path,
    passphrase_file: Option<&Path>,
    args: ServeArgs,
) -> Result<(), KmsError> {
    let state = http::State::new(data_dir, passphrase_file, args.max_body_bytes)?;
    listener::run(state, &args)
}
