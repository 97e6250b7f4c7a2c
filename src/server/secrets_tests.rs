//! Secrets Manager's protocol on the KMS server, through the request handler with
//! signed requests: each service's requests must be signed for it, unknown operations
//! and the local-only `RotationCommand` are refused by the server itself (the command is
//! neither run nor echoed), quotas are per operation and apart from KMS's, and internal
//! failures are `InternalServiceError` 500 without their detail.

use std::net::SocketAddr;
use std::time::SystemTime;

use serde_json::{Value, json};

use super::body::RequestBody;
use super::http::{Answer, JSON_11, Limits, Received, State};
use super::secrets::error_answer;
use crate::aws::AwsError;
use crate::aws::ids::Region;
use crate::aws::sigv4::{self, Credentials, RequestParts};
use crate::iam::{EntityKind, IdentityStore};

const REGION: &str = "test-1";

struct Server {
    _dir: tempfile::TempDir,
    state: State,
    id: String,
    secret: String,
}

fn server(management_rate: u32) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let region = Region::parse(REGION).unwrap();
    crate::kms::init::init(dir.path(), &region, None, 0).unwrap();
    let account = crate::datadir::read_account_id(dir.path()).unwrap();
    let store = IdentityStore::new(dir.path(), account);
    store.create(EntityKind::User, "alice", "", None).unwrap();
    let all = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["kms:*", "secretsmanager:*"], "Resource": "*"}]});
    store
        .put_policy(EntityKind::User, "alice", "all", &all.to_string())
        .unwrap();
    let k = store.create_access_key("alice").unwrap();
    let limits = Limits {
        max_body: 1 << 20,
        body_timeout: std::time::Duration::from_secs(5),
        crypto_rate: 1000,
        management_rate,
        refused_audit_rate: 1000,
    };
    let state = State::new(dir.path(), None, &region, &limits).unwrap();
    Server {
        _dir: dir,
        state,
        id: k["AccessKey"]["AccessKeyId"].as_str().unwrap().to_string(),
        secret: k["AccessKey"]["SecretAccessKey"]
            .as_str()
            .unwrap()
            .to_string(),
    }
}

impl Server {
    /// `target` with `body`, signed by alice for `service`.
    fn call(&self, target: &str, body: &str, service: &str) -> Answer {
        let mut headers = vec![
            ("host".to_string(), "127.0.0.1:9400".to_string()),
            ("content-type".to_string(), JSON_11.to_string()),
            ("x-amz-target".to_string(), target.to_string()),
        ];
        let parts = RequestParts {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: body.as_bytes(),
        };
        let creds = Credentials {
            access_key_id: &self.id,
            secret_access_key: &self.secret,
            session_token: None,
        };
        let added = sigv4::sign(&parts, &creds, REGION, service, SystemTime::now());
        headers.extend(added);
        self.state.handle(Received {
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers,
            body: Ok(RequestBody::unbudgeted(body.as_bytes().to_vec())),
            peer: "127.0.0.1:50000".parse::<SocketAddr>().unwrap(),
            tls: false,
            request_id: "test-request".into(),
        })
    }

    fn sm(&self, op: &str, body: Value) -> Answer {
        self.call(
            &format!("secretsmanager.{op}"),
            &body.to_string(),
            "secretsmanager",
        )
    }
}

/// The codes of a refused signature (none may answer a well-signed request).
const AUTH_CODES: &[&str] = &[
    "InvalidSignatureException",
    "IncompleteSignatureException",
    "MissingAuthenticationTokenException",
    "UnrecognizedClientException",
];

#[test]
fn each_service_is_signed_for_itself() {
    let s = server(1000);
    // Secrets Manager's target signed for kms: refused as AWS refuses a wrong scope.
    let a = s.call("secretsmanager.ListSecrets", "{}", "kms");
    assert_eq!(
        (a.status, a.code().as_str()),
        (400, "InvalidSignatureException")
    );
    assert!(a.message().contains("'secretsmanager'"), "{}", a.message());
    // KMS's target signed for secretsmanager: refused too.
    let a = s.call("TrentService.ListKeys", "{}", "secretsmanager");
    assert_eq!(
        (a.status, a.code().as_str()),
        (400, "InvalidSignatureException")
    );
    assert!(a.message().contains("'kms'"), "{}", a.message());
    // Each signed for its own service goes through.
    let a = s.call("TrentService.ListKeys", "{}", "kms");
    assert!(!AUTH_CODES.contains(&a.code().as_str()), "{}", a.message());
    let a = s.sm("ListSecrets", json!({}));
    assert_eq!(a.status, 200, "{}", a.message());
    assert_eq!(a.content_type, JSON_11);
}

#[test]
fn a_value_goes_in_and_comes_out_in_aws_json() {
    let s = server(1000);
    let a = s.sm(
        "CreateSecret",
        json!({"Name": "db", "SecretString": "hunter2-hunter2", "ClientRequestToken": "t".repeat(32)}),
    );
    assert_eq!(a.status, 200, "{}", a.message());
    let created: Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(created["VersionId"], "t".repeat(32));
    let a = s.sm("GetSecretValue", json!({"SecretId": "db"}));
    assert_eq!(a.status, 200, "{}", a.message());
    let got: Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(got["SecretString"], "hunter2-hunter2");
    assert_eq!(got["ARN"], created["ARN"]);
    assert!(got["CreatedDate"].is_number(), "{got}");
    // A Secrets Manager exception: 400 with AWS's envelope.
    let a = s.sm("GetSecretValue", json!({"SecretId": "nope"}));
    assert_eq!(
        (a.status, a.code().as_str()),
        (400, "ResourceNotFoundException")
    );
    let v: Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
}

#[test]
fn unknown_operations_are_refused_per_service() {
    let s = server(1000);
    for (target, of) in [
        ("secretsmanager.BatchGetSecretValue", "Secrets Manager"),
        ("secretsmanager.CreateKey", "Secrets Manager"),
        ("secretsmanager.", "Secrets Manager"),
        ("TrentService.GetSecretValue", "KMS"),
    ] {
        let service = if of == "KMS" { "kms" } else { "secretsmanager" };
        let a = s.call(target, "{}", service);
        assert_eq!(
            (a.status, a.code().as_str()),
            (400, "UnknownOperationException"),
            "{target}: {}",
            a.message()
        );
        assert!(
            a.message().ends_with(&format!("this {of}")),
            "{}",
            a.message()
        );
    }
    // A foreign target is KMS's to refuse (signed for kms), naming both prefixes.
    let a = s.call("SecretsManager.ListSecrets", "{}", "kms");
    assert_eq!(a.code(), "UnknownOperationException");
    assert!(
        a.message().contains("secretsmanager.<Operation>"),
        "{}",
        a.message()
    );
}

#[test]
fn a_rotation_command_is_refused_by_the_server_unrun_and_unechoed() {
    let s = server(1000);
    let marker = s._dir.path().join("ran");
    let command = format!("/bin/touch {}", marker.display());
    for op in ["RotateSecret", "CreateSecret", "UpdateSecret"] {
        let a = s.sm(
            op,
            json!({"SecretId": "s", "Name": "s", "RotationCommand": command,
                   "RotationRules": {"AutomaticallyAfterDays": 1}}),
        );
        assert_eq!(
            (a.status, a.code().as_str()),
            (400, "InvalidParameterException"),
            "{op}: {}",
            a.message()
        );
        assert!(a.message().contains("RotationCommand"), "{}", a.message());
        assert!(!a.message().contains("/bin/touch"), "{}", a.message());
    }
    assert!(!marker.exists(), "the rotation command ran");
}

#[test]
fn bodies_that_are_not_json_objects_are_refused() {
    let s = server(1000);
    for body in ["[1]", "\"s3cr3t-value\"", "{\"SecretString\": "] {
        let a = s.call("secretsmanager.CreateSecret", body, "secretsmanager");
        assert_eq!(
            (a.status, a.code().as_str()),
            (400, "SerializationException")
        );
        assert!(!a.message().contains("s3cr3t"), "{}", a.message());
    }
}

#[test]
fn secrets_manager_quotas_are_per_operation_and_apart_from_kms() {
    let s = server(1);
    let a = s.sm("ListSecrets", json!({}));
    assert_ne!(a.code(), "ThrottlingException");
    let a = s.sm("ListSecrets", json!({}));
    assert_eq!((a.status, a.code().as_str()), (400, "ThrottlingException"));
    assert_eq!(a.message(), "Rate exceeded");
    // Another operation, and KMS's operation of the same name: quotas of their own.
    let a = s.sm("DescribeSecret", json!({"SecretId": "s"}));
    assert_ne!(a.code(), "ThrottlingException");
    let a = s.call(
        "TrentService.TagResource",
        r#"{"KeyId": "alias/none", "Tags": []}"#,
        "kms",
    );
    assert_ne!(a.code(), "ThrottlingException");
    let a = s.sm("TagResource", json!({"SecretId": "s", "Tags": []}));
    assert_ne!(a.code(), "ThrottlingException", "{}", a.message());
}

#[test]
fn internal_failures_are_internal_service_errors_without_detail() {
    let r = Received {
        method: "POST".into(),
        path: "/".into(),
        query: String::new(),
        headers: vec![],
        body: Ok(RequestBody::unbudgeted(vec![])),
        peer: "127.0.0.1:1".parse().unwrap(),
        tls: false,
        request_id: "rid".into(),
    };
    let io = AwsError::io(
        "cannot read",
        "/var/lib/cryptvol/secret-dir",
        std::io::Error::other("boom"),
    );
    let a = error_answer(&r, "GetSecretValue", &io);
    assert_eq!((a.status, a.code().as_str()), (500, "InternalServiceError"));
    assert!(!a.message().contains("/var/lib"), "{}", a.message());
    let own = AwsError::Secrets {
        code: "InternalServiceError",
        message: "the secret file /var/lib/x is torn".into(),
    };
    let a = error_answer(&r, "GetSecretValue", &own);
    assert_eq!((a.status, a.code().as_str()), (500, "InternalServiceError"));
    assert!(!a.message().contains("/var/lib"), "{}", a.message());
    let not_found = AwsError::Secrets {
        code: "ResourceNotFoundException",
        message: "Secrets Manager can't find the specified secret.".into(),
    };
    let a = error_answer(&r, "GetSecretValue", &not_found);
    assert_eq!(
        (a.status, a.code().as_str(), a.message().as_str()),
        (
            400,
            "ResourceNotFoundException",
            "Secrets Manager can't find the specified secret."
        )
    );
    let denied = AwsError::AccessDenied {
        message: "User: x is not authorized".into(),
    };
    let a = error_answer(&r, "GetSecretValue", &denied);
    assert_eq!(
        (a.status, a.code().as_str()),
        (400, "AccessDeniedException")
    );
}

#[test]
fn every_opened_region_runs_its_due_rotations_until_the_server_stops() {
    let s = server(1000);
    assert!(s.state.rotations.regions().is_empty());
    let a = s.sm("ListSecrets", json!({}));
    assert_eq!(a.status, 200, "{}", a.message());
    // KMS's requests open the region too; one loop per region, however it was opened.
    let a = s.call("TrentService.ListKeys", "{}", "kms");
    assert_eq!(a.status, 200, "{}", a.message());
    assert_eq!(s.state.rotations.regions(), vec![REGION.to_string()]);
    let started = std::time::Instant::now();
    s.state.rotations.stop();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(s.state.rotations.regions().is_empty());
}

/// Every event of the test region's trail.
fn trail(s: &Server) -> Vec<Value> {
    let dir = s._dir.path().join("regions").join(REGION).join("audit");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect()
}

#[test]
fn refusals_of_a_known_caller_are_recorded_as_secrets_manager_events() {
    let s = server(1000);
    s.sm("GetSecretValues", json!({"SecretId": "x"}));
    s.sm(
        "RotateSecret",
        json!({"SecretId": "x", "RotationCommand": "/bin/true"}),
    );
    s.call("secretsmanager.Get-Secret<Value>", "{}", "secretsmanager");
    // Signed for the wrong service: nobody is known, so it is KMS's kind of refusal.
    s.call("secretsmanager.ListSecrets", "{}", "kms");
    let events = trail(&s);
    let refused = |name: &str, code: &str| {
        events
            .iter()
            .find(|e| e["eventName"] == name && e["errorCode"] == code)
            .unwrap_or_else(|| panic!("no {name} refused with {code}: {events:#?}"))
    };
    for (name, code) in [
        ("GetSecretValues", "UnknownOperationException"),
        ("RotateSecret", "InvalidParameterException"),
        ("Unknown", "UnknownOperationException"),
    ] {
        let e = refused(name, code);
        assert_eq!(e["eventSource"], crate::secrets::EVENT_SOURCE, "{e}");
        assert_eq!(e["userIdentity"]["userName"], "alice", "{e}");
        assert_eq!(e["requestID"], "test-request", "{e}");
        assert!(!e.to_string().contains("/bin/true"), "{e}");
    }
    let e = refused("ListSecrets", "InvalidSignatureException");
    assert_eq!(e["eventSource"], "kms.amazonaws.com", "{e}");
    assert_eq!(e["userIdentity"]["type"], "Unknown", "{e}");
}

#[test]
fn a_rotation_command_set_on_this_machine_is_not_shown_to_remote_clients() {
    let s = server(1000);
    let a = s.sm(
        "CreateSecret",
        json!({"Name": "db", "SecretString": "v-v-v-v-v-v-v-v"}),
    );
    assert_eq!(a.status, 200, "{}", a.message());
    // As the CLI sets it.
    let sm = s.state.secrets(REGION).unwrap();
    let root = crate::iam::Caller::local(crate::iam::Identity::root(
        s.state.identities.store().account.clone(),
    ));
    let set = sm.call(
        &root,
        "RotateSecret",
        &json!({"SecretId": "db", "RotationCommand": "/bin/true",
                "RotateImmediately": false, "RotationRules": {"AutomaticallyAfterDays": 7}}),
        crate::secrets::Via::Cli,
    );
    set.unwrap();
    let local = sm
        .call(
            &root,
            "DescribeSecret",
            &json!({"SecretId": "db"}),
            crate::secrets::Via::Cli,
        )
        .unwrap();
    for (op, body) in [
        ("DescribeSecret", json!({"SecretId": "db"})),
        ("ListSecrets", json!({})),
    ] {
        let a = s.sm(op, body);
        assert_eq!(a.status, 200, "{op}: {}", a.message());
        let text = String::from_utf8_lossy(&a.body);
        assert!(!text.contains("/opt/local"), "{op}: {text}");
        assert!(text.contains("RotationEnabled"), "{op}: {text}");
    }
    // The CLI still sees it, if the core shows it there.
    if local.get("RotationCommand").is_some() {
        assert_eq!(local["RotationCommand"], "/bin/true");
    }
}
