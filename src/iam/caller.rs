//! Who makes a KMS call and how: the identity, the access key it signed with (server),
//! where it came from, and the service it went through (`kms:ViaService`). Every KMS
//! operation takes a [`Caller`]; policies judge it and the audit trail records it.

use std::sync::Arc;

use crate::aws::ids::Region;
use crate::iam::Identity;

/// Cheap to clone: the identity (with its parsed policies) and the `userIdentity` are
/// shared, not copied (the server makes a caller per request, and a call may derive
/// others from it: grant tokens, a service in between).
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: Arc<Identity>,
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
    /// The request's `GrantTokens` (checked by the operations that take them).
    pub grant_tokens: Vec<String>,
    /// CloudTrail's `userIdentity`, made once per caller rather than once per event.
    user_identity: Arc<serde_json::Value>,
}

impl Caller {
    /// A caller on this machine, through the CLI.
    pub fn local(identity: Identity) -> Caller {
        let user_agent = format!("cryptvol-cli/{}", env!("CARGO_PKG_VERSION"));
        Caller::new(identity, None, local_user(), None, user_agent, None)
    }

    /// A caller with its request metadata (the KMS server makes one per request).
    pub fn new(
        identity: impl Into<Arc<Identity>>,
        access_key_id: Option<String>,
        source: String,
        source_ip: Option<String>,
        user_agent: String,
        secure_transport: Option<bool>,
    ) -> Caller {
        let identity = identity.into();
        let user_identity = Arc::new(identity.user_identity(access_key_id.as_deref()));
        Caller {
            identity,
            access_key_id,
            source,
            source_ip,
            user_agent,
            via_service: None,
            secure_transport,
            grant_tokens: Vec::new(),
            user_identity,
        }
    }

    /// The same caller presenting `tokens` as the request's `GrantTokens`.
    pub fn with_grant_tokens(&self, tokens: Vec<String>) -> Caller {
        Caller {
            grant_tokens: tokens,
            ..self.clone()
        }
    }

    /// The AWS service `service` (e.g. `ec2.<region>.amazonaws.com`) calling KMS itself on
    /// behalf of `on_behalf_of`, as EBS does with a grant made to its service principal.
    /// It has no identity policies: a key policy's `{"Service": ...}` principal or a grant
    /// whose grantee is `service` lets it in. The trail records it as CloudTrail records
    /// a service (`"type": "AWSService"`), with the user under `onBehalfOf`.
    pub fn aws_service(service: &str, on_behalf_of: &Caller) -> Caller {
        let identity = Identity {
            account: on_behalf_of.identity.account.clone(),
            principal: crate::iam::Principal::Service {
                name: service.to_string(),
            },
            policies: Vec::new(),
            session: None,
        };
        let mut user_identity = identity.user_identity(None);
        let mut behalf = (*on_behalf_of.user_identity).clone();
        if let Some(m) = behalf.as_object_mut() {
            m.remove("invokedBy");
        }
        user_identity["onBehalfOf"] = behalf;
        Caller {
            identity: Arc::new(identity),
            access_key_id: None,
            source: on_behalf_of.source.clone(),
            source_ip: on_behalf_of.source_ip.clone(),
            user_agent: service.to_string(),
            via_service: Some(service.to_string()),
            secure_transport: on_behalf_of.secure_transport,
            grant_tokens: on_behalf_of.grant_tokens.clone(),
            user_identity: Arc::new(user_identity),
        }
    }

    /// The same caller, acting through the volume service of `region` (as EBS calls KMS
    /// on a user's behalf).
    pub fn via_volumes(&self, region: &Region) -> Caller {
        self.via(volume_service(region))
    }

    /// The same caller, acting through the AWS service `via` (`kms:ViaService`, CloudTrail's
    /// `invokedBy`), as a service calls KMS with its user's credentials.
    pub fn via(&self, via: String) -> Caller {
        let mut user_identity = (*self.user_identity).clone();
        user_identity["invokedBy"] = serde_json::Value::String(via.clone());
        Caller {
            via_service: Some(via),
            user_identity: Arc::new(user_identity),
            ..self.clone()
        }
    }

    /// CloudTrail's `userIdentity` of this caller (with `invokedBy` through a service).
    pub fn user_identity(&self) -> &serde_json::Value {
        &self.user_identity
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
