//! cryptvol's own remote key backend (`--kms-endpoint`) with temporary credentials.

use super::common::server::KmsServer as Server;
use super::common::*;
use super::support::*;

/// cryptvol itself as a client of the server (`--kms-endpoint`) with temporary
/// credentials (`AWS_SESSION_TOKEN`): a role session that may use the key creates a
/// volume keyed by it; one whose role may not is denied (18); an expired token (7,
/// ExpiredTokenException) and a missing one (7, UnrecognizedClientException) are refused.
#[test]
fn the_cli_uses_temporary_credentials_through_the_server() {
    let kms_side = Env::init();
    let account = kms_side.account();
    kms_side.create_user("alice");
    let alice_arn = format!("arn:aws:iam::{account}:user/alice");
    let volumes = create_role(&kms_side, "volumes", Some(&trust(&alice_arn)));
    put_policy(&kms_side, "role", "volumes", &allow(&["kms:*"], "*"));
    let nothing = create_role(&kms_side, "nothing", Some(&trust(&alice_arn)));
    let key = str_field(&kms_side.json(&["kms", "create-key"])["KeyMetadata"], "Arn");
    let allowed = Creds::from_cli(&assume(&kms_side, "alice", &volumes, "vol"));
    let denied = Creds::from_cli(&assume(&kms_side, "alice", &nothing, "none"));
    let args = as_(
        "alice",
        &[
            "sts",
            "assume-role",
            "--role-arn",
            &volumes,
            "--role-session-name",
            "old",
            "--duration-seconds",
            "900",
        ],
    );
    let expired = Creds::from_cli(&kms_side.json_env(&args, &[(SKEW_ENV, "-7200")]));
    let server = Server::start(&kms_side);

    let client = Env::init();
    let create = |c: &Creds| {
        let mut envs = vec![
            ("AWS_ACCESS_KEY_ID", c.id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", c.secret.as_str()),
            ("CRYPTVOL_KMS_ENDPOINT", server.endpoint.as_str()),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ];
        if let Some(t) = &c.token {
            envs.push(("AWS_SESSION_TOKEN", t.as_str()));
        }
        client.run_env(
            &["volume", "create", "--size", "16M", "--kms-key", &key],
            &envs,
        )
    };
    let out = create(&allowed).ok();
    assert!(out.stdout.contains("vol-"), "{}", out.stdout);
    for (c, code, name) in [
        (&denied, 18, "AccessDeniedException"),
        (&expired, 7, "ExpiredTokenException"),
        (&allowed.with_token(None), 7, "UnrecognizedClientException"),
    ] {
        let out = create(c);
        assert_eq!(out.code, code, "{name}: {}", out.stderr);
        assert!(out.stderr.contains(name), "{}", out.stderr);
        assert_one_error_line("volume create", &out.stderr);
    }
    assert_eq!(
        client.json(&["volume", "list"])["Volumes"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    server.stop();
    let events = kms_side.lookup(&["--principal", "volumes"]);
    assert!(
        events.iter().any(|e| e["userIdentity"]["arn"]
            == format!("arn:aws:sts::{account}:assumed-role/volumes/vol").as_str()
            && e.get("errorCode").is_none()),
        "no call by the volumes session: {events:#?}"
    );
}
