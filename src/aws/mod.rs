//! What cryptvol shares with AWS itself, independent of any one service: the names of
//! regions and accounts ([`ids`]), the error every API call answers with and its AWS
//! exception name ([`error`]), base64 as AWS writes blobs ([`b64`]), and Signature
//! Version 4 ([`sigv4`]), which authenticates requests to `kms serve` and signs the
//! remote client's.

pub mod b64;
pub mod credentials;
pub mod error;
pub mod ids;
pub mod sigv4;

pub use error::AwsError;
pub use ids::{AccountId, Region};
