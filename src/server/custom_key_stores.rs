//! The custom key store operations of the KMS protocol: CreateCustomKeyStore,
//! DescribeCustomKeyStores, UpdateCustomKeyStore, DeleteCustomKeyStore,
//! ConnectCustomKeyStore and DisconnectCustomKeyStore (AWS's member names).

use serde::Deserialize;
use serde_json::{Value, json};

use super::dispatch::{Failure, parse};
use crate::aws::AwsError;
use crate::iam::Caller;
use crate::kms::EmbeddedKms;
use crate::kms::embedded::{CreateCustomKeyStoreRequest, Paging, UpdateCustomKeyStoreRequest};
use crate::kms::model::StorePassword;

pub const OPERATIONS: &[&str] = &[
    "CreateCustomKeyStore",
    "DescribeCustomKeyStores",
    "UpdateCustomKeyStore",
    "DeleteCustomKeyStore",
    "ConnectCustomKeyStore",
    "DisconnectCustomKeyStore",
];

/// The members of the external key store (XKS) variant, which cryptvol does not offer.
const XKS_MEMBERS: &[&str] = &[
    "XksProxyUriEndpoint",
    "XksProxyUriPath",
    "XksProxyVpcEndpointServiceName",
    "XksProxyAuthenticationCredential",
    "XksProxyConnectivity",
    "XksProxyVpcEndpointServiceOwner",
];

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Create {
    custom_key_store_name: String,
    cloud_hsm_cluster_id: Option<String>,
    trust_anchor_certificate: Option<String>,
    #[serde(default, deserialize_with = "secret")]
    key_store_password: Option<zeroize::Zeroizing<String>>,
    custom_key_store_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Describe {
    custom_key_store_id: Option<String>,
    custom_key_store_name: Option<String>,
    limit: Option<i64>,
    marker: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Update {
    custom_key_store_id: String,
    new_custom_key_store_name: Option<String>,
    cloud_hsm_cluster_id: Option<String>,
    #[serde(default, deserialize_with = "secret")]
    key_store_password: Option<zeroize::Zeroizing<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StoreOnly {
    custom_key_store_id: String,
}

/// `KeyStorePassword`, whose value is never in an error: serde's type error quotes the
/// value it got (`invalid type: integer \`12345678\``), and a PIN sent as a JSON number
/// would be echoed to the caller and into the server's log.
fn secret<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<zeroize::Zeroizing<String>>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(zeroize::Zeroizing::new(s))),
        Some(_) => Err(serde::de::Error::custom(
            "KeyStorePassword must be a string (its value is not shown)",
        )),
    }
}

fn password(p: Option<zeroize::Zeroizing<String>>) -> Option<StorePassword> {
    p.map(|p| StorePassword::new(p.as_str().to_string()))
}

/// Refuses the XKS members: this KMS has AWS_CLOUDHSM stores only.
fn refuse_xks(body: &Value) -> Result<(), Failure> {
    match XKS_MEMBERS.iter().find(|m| body.get(**m).is_some()) {
        Some(m) => Err(Failure::Kms(AwsError::Unsupported {
            message: format!(
                "{m}: external key stores (XKS) are not offered; use an AWS_CLOUDHSM store"
            ),
        })),
        None => Ok(()),
    }
}

/// Drops the XKS members before parsing (each is refused first).
fn without_xks(body: &Value) -> Value {
    let mut b = body.clone();
    if let Some(o) = b.as_object_mut() {
        for m in XKS_MEMBERS {
            o.remove(*m);
        }
    }
    b
}

pub fn call(kms: &EmbeddedKms, c: &Caller, op: &str, body: &Value) -> Result<Value, Failure> {
    refuse_xks(body)?;
    let body = &without_xks(body);
    Ok(match op {
        "CreateCustomKeyStore" => {
            let r: Create = parse(op, body)?;
            let id = kms.create_custom_key_store(
                c,
                &CreateCustomKeyStoreRequest {
                    name: r.custom_key_store_name,
                    store_type: r.custom_key_store_type,
                    cluster: r.cloud_hsm_cluster_id,
                    password: password(r.key_store_password),
                    trust_anchor_certificate: r.trust_anchor_certificate,
                },
            )?;
            json!({ "CustomKeyStoreId": id })
        }
        "DescribeCustomKeyStores" => {
            let r: Describe = parse(op, body)?;
            let (_, page) = kms.describe_custom_key_stores(
                c,
                r.custom_key_store_id.as_deref(),
                r.custom_key_store_name.as_deref(),
                &Paging {
                    limit: r.limit,
                    marker: r.marker,
                },
            )?;
            page
        }
        "UpdateCustomKeyStore" => {
            let r: Update = parse(op, body)?;
            kms.update_custom_key_store(
                c,
                &UpdateCustomKeyStoreRequest {
                    id: r.custom_key_store_id,
                    new_name: r.new_custom_key_store_name,
                    cluster: r.cloud_hsm_cluster_id,
                    password: password(r.key_store_password),
                },
            )?;
            json!({})
        }
        "DeleteCustomKeyStore" | "ConnectCustomKeyStore" | "DisconnectCustomKeyStore" => {
            let r: StoreOnly = parse(op, body)?;
            let id = r.custom_key_store_id.as_str();
            match op {
                "DeleteCustomKeyStore" => kms.delete_custom_key_store(c, id)?,
                "ConnectCustomKeyStore" => kms.connect_custom_key_store(c, id)?,
                _ => kms.disconnect_custom_key_store(c, id)?,
            }
            json!({})
        }
        other => unreachable!("{other} is not a custom key store operation"),
    })
}
