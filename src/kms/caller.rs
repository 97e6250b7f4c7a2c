//! Who makes a KMS call and how: the identity, the access key it signed with (server),
//! where it came from, and the service it went through (`kms:ViaService`). Every KMS
//! operation takes a [`Caller`]; policies judge it and the audit trail records it.

use super::identity::Identity;
use super::ids::Region;

#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: Identity,
    /// The access key a request was signed with (KMS server); None for the local CLI.
    pub access_key_id: Option<String>,
    /// CloudTrail's `sourceIPAddress`: the client address, or the local OS user.
    pub source: String,
    /// Set when `source` is a network address (`aws:SourceIp`).
    pub source_ip: Option<String>,
    pub user_agent: String,
    /// The AWS service the call was made through (`ec2.<region>.amazonaws.com` for
    /// volumes and snapshots), as `kms:ViaService` and CloudTrail's `invokedBy` show it.
    pub via_service: Option<String>,
    /// `aws:SecureTransport`: known only for calls over the network.
    pub secure_transport: Option<bool>,
}

impl Caller {
    /// A caller on this machine, through the CLI.
    pub fn local(identity: Identity) -> Caller {
        Caller {
            identity,
            access_key_id: None,
            source: local_user(),
            source_ip: None,
            user_agent: format!("cryptvol-cli/{}", env!("CARGO_PKG_VERSION")),
            via_service: None,
            secure_transport: None,
        }
    }

    /// The same caller, acting through the volume service of `region` (as EBS calls KMS
    /// on a user's behalf).
    pub fn via_volumes(&self, region: &Region) -> Caller {
        Caller {
            via_service: Some(volume_service(region)),
            ..self.clone()
        }
    }
}

/// The `kms:ViaService` value of the volume layer: EBS's, so that policies written for
/// EBS volumes (`kms:ViaService = ec2.<region>.amazonaws.com`) work unchanged.
pub fn volume_service(region: &Region) -> String {
    format!("ec2.{region}.amazonaws.com")
}

/// `user:<name>` of the effective uid (or `uid:<n>` when it has no name).
fn local_user() -> String {
    let uid = nix::unistd::geteuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => format!("user:{}", u.name),
        _ => format!("uid:{uid}"),
    }
}
