//! Which servers the remote client trusts, and what it says when one is not trusted.
//!
//! By default ureq (rustls) trusts the Mozilla roots it bundles. `--kms-ca-bundle FILE` /
//! `AWS_CA_BUNDLE` replaces them with the certificates of a PEM file, as the AWS CLI's
//! `--ca-bundle` does: a private CA, or the self-signed certificate of a `kms serve`.

use std::path::Path;

use ureq::tls::{PemItem, RootCerts, TlsConfig};

use crate::aws::error::{AwsError, Result};

/// A TLS configuration trusting exactly the certificates of the PEM file at `path`.
pub fn with_ca_bundle(path: &Path) -> Result<TlsConfig> {
    let pem = std::fs::read(path).map_err(|source| AwsError::Io {
        action: "cannot read the CA bundle",
        path: path.to_path_buf(),
        hint: " (check --kms-ca-bundle or AWS_CA_BUNDLE)",
        source,
    })?;
    let certs = ca_certificates(&pem).map_err(|why| {
        AwsError::validation(
            "--kms-ca-bundle",
            format!(
                "{}: {why}: give a PEM file of CA certificates (-----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        )
    })?;
    Ok(TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&certs))
        .build())
}

/// The certificates of a PEM bundle (other items, such as keys, are skipped).
fn ca_certificates(pem: &[u8]) -> Result<Vec<ureq::tls::Certificate<'static>>, &'static str> {
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(_) => return Err("it is not valid PEM"),
        }
    }
    if certs.is_empty() {
        return Err("it holds no certificate");
    }
    Ok(certs)
}

/// A request that got no answer: an untrusted certificate (its own error, which says to
/// pass the CA), or an endpoint that is down, refuses, or times out.
pub fn transport_error(endpoint: &str, e: ureq::Error) -> AwsError {
    let message = e.to_string();
    if message.contains("invalid peer certificate") || message.contains("UnknownIssuer") {
        return AwsError::EndpointUntrusted {
            endpoint: endpoint.to_string(),
            message: message
                .trim_start_matches("io: ")
                .trim_start_matches("rustls: ")
                .to_string(),
        };
    }
    AwsError::EndpointUnreachable {
        endpoint: endpoint.to_string(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_that_hold_no_certificate_are_refused() {
        assert_eq!(
            ca_certificates(b"just text").unwrap_err(),
            "it holds no certificate"
        );
        let key_only = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert_eq!(
            ca_certificates(key_only).unwrap_err(),
            "it holds no certificate"
        );
        let broken = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(ca_certificates(broken).is_err());
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.pem");
        let e = with_ca_bundle(&missing).unwrap_err();
        assert!(matches!(e, AwsError::Io { .. }), "{e}");
        assert!(e.to_string().contains("--kms-ca-bundle"), "{e}");
    }
}
