//! Region root keys in a PKCS#11 token (`init --root-key pkcs11:...`) and
//! `region rotate-root-key` for key-file, passphrase and token roots: before and after,
//! crashes at each step, and `kms create-key` racing a rotation.

mod common;
#[path = "formats/reader.rs"]
#[allow(dead_code)]
mod reader;

use std::path::{Path, PathBuf};

use common::hsm;
use common::*;
use serde_json::Value;

const ROTATE: &[&str] = &["region", "rotate-root-key"];
const CRASH_ENV: &str = "CRYPTVOL_TEST_ROOT_ROTATION_CRASH_AT";
const STEPS: &[&str] = &[
    "staged",
    "committed",
    "root-key-installed",
    "keystore-installed",
    "config-installed",
];

/// What a region held before a change; [`check_kept`] asserts it all still works.
struct Before {
    key: String,
    blob: Vec<u8>,
    keystore: Vec<u8>,
    config: Vec<u8>,
    root_file: Option<Vec<u8>>,
}

fn region_file(env: &Env, name: &str) -> PathBuf {
    env.region_dir(DEFAULT_REGION).join(name)
}

fn populate(env: &Env, global: &[&str]) -> Before {
    let key = str_field(
        &env.json(&[global, &["kms", "create-key"]].concat())["KeyMetadata"],
        "KeyId",
    );
    let pt = env.file(b"made before the rotation");
    let out = env.json(
        &[
            global,
            &[
                "kms",
                "encrypt",
                "--key-id",
                &key,
                "--plaintext",
                &fileb(&pt),
            ],
        ]
        .concat(),
    );
    Before {
        key,
        blob: unb64(&str_field(&out, "CiphertextBlob")),
        keystore: env.keystore_bytes(DEFAULT_REGION),
        config: std::fs::read(region_file(env, "region.json")).unwrap(),
        root_file: std::fs::read(region_file(env, "root.key")).ok(),
    }
}

/// The blob made before decrypts, the key is listed, the audit trail verifies, a new key
/// can be made and used.
fn check_kept(env: &Env, global: &[&str], b: &Before) {
    let blob = env.file(&b.blob);
    let v = env.json(
        &[
            global,
            &["kms", "decrypt", "--ciphertext-blob", &fileb(&blob)],
        ]
        .concat(),
    );
    assert_eq!(
        unb64(&str_field(&v, "Plaintext")),
        b"made before the rotation"
    );
    let keys = env.ok(&[global, &["kms", "list-keys"]].concat());
    assert!(keys.contains(&b.key), "{keys}");
    let audit = env.json(&[global, &["audit", "verify"]].concat());
    assert_eq!(audit["Valid"], true, "{audit:#}");
    let k2 = env.json(&[global, &["kms", "create-key"]].concat());
    let k2 = str_field(&k2["KeyMetadata"], "KeyId");
    env.ok(&[
        global,
        &[
            "kms",
            "generate-data-key",
            "--key-id",
            &k2,
            "--key-spec",
            "AES_256",
        ],
    ]
    .concat());
}

/// A copy of the data dir with the region's old region.json (and old root.key) put back:
/// the old root must not open the rotated keystore.
fn assert_old_root_refused(env: &Env, global: &[&str], b: &Before) {
    let copy = env.scratch().join(format!("old-root-{}", rand_suffix()));
    copy_dir(&env.data, &copy);
    let r = copy.join("regions").join(DEFAULT_REGION);
    std::fs::write(r.join("region.json"), &b.config).unwrap();
    if let Some(old) = &b.root_file {
        std::fs::write(r.join("root.key"), old).unwrap();
    }
    let mut c = env.cmd();
    c.arg("--data-dir")
        .arg(&copy)
        .args(global)
        .args(["kms", "list-keys"]);
    let o = c.output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(12),
        "the old root opened the rotated keystore: {o:?}"
    );
}

/// Every line of the region's audit trail, oldest first (log files sort by first seq).
fn audit_lines(env: &Env) -> Vec<String> {
    let mut logs: Vec<_> = std::fs::read_dir(region_file(env, "audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    logs.sort();
    logs.iter()
        .flat_map(|log| {
            let text = std::fs::read_to_string(log).unwrap();
            text.lines().map(str::to_owned).collect::<Vec<_>>()
        })
        .collect()
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

fn copy_dir(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

fn rotate_and_check(env: &Env, global: &[&str], how: &[&str], expect_source: &str) -> Value {
    rotate_and_check_as(env, global, global, how, expect_source)
}

/// [`rotate_and_check`] for a rotation that changes how the region is opened (`global`
/// before, `after` after: a new passphrase).
fn rotate_and_check_as(
    env: &Env,
    global: &[&str],
    after: &[&str],
    how: &[&str],
    expect_source: &str,
) -> Value {
    let b = populate(env, global);
    let v = env.json(&[global, ROTATE, how].concat());
    assert!(str_field(&v, "NewRootKey").contains(expect_source), "{v:#}");
    assert_ne!(env.keystore_bytes(DEFAULT_REGION), b.keystore);
    assert_ne!(
        std::fs::read(region_file(env, "region.json")).unwrap(),
        b.config
    );
    assert!(!region_file(env, ".root-rotation").exists());
    check_kept(env, after, &b);
    assert_old_root_refused(env, global, &b);
    v
}

#[test]
fn rotating_a_key_file_root_reseals_and_overwrites_the_old_file() {
    let env = Env::init();
    let old_root = std::fs::read(region_file(&env, "root.key")).unwrap();
    let v = rotate_and_check(&env, &[], &[], "root.key");
    let new_root = std::fs::read(region_file(&env, "root.key")).unwrap();
    assert_eq!(new_root.len(), 32);
    assert_ne!(new_root, old_root);
    assert!(
        str_field(&v, "OldRootMaterial").contains("overwritten"),
        "{v:#}"
    );
    // Twice in a row: the first rotation's state is a valid start.
    rotate_and_check(&env, &[], &["--key-file"], "root.key");
}

#[test]
fn rotating_a_passphrase_root_with_the_same_or_a_new_passphrase() {
    let env = Env::new();
    let p1 = env.file(b"first passphrase\n");
    let p1 = p1.to_str().unwrap();
    env.ok(&["--passphrase-file", p1, "init"]);
    // Same kind: the same passphrase with a new salt.
    rotate_and_check(&env, &["--passphrase-file", p1], &[], "passphrase");
    let p2 = env.file(b"second passphrase\n");
    let p2 = p2.to_str().unwrap();
    rotate_and_check_as(
        &env,
        &["--passphrase-file", p1],
        &["--passphrase-file", p2],
        &["--new-passphrase-file", p2],
        "passphrase",
    );
    // Only the new passphrase opens it now.
    env.run(&["--passphrase-file", p1, "kms", "list-keys"])
        .fails(7);
    // And to a key file.
    rotate_and_check(
        &env,
        &["--passphrase-file", p2],
        &["--key-file"],
        "root.key",
    );
    env.ok(&["kms", "list-keys"]);
}

#[test]
fn an_hsm_root_region_works_and_needs_its_token() {
    let env = Env::new();
    let Some(t) = hsm::token(env.scratch()) else {
        return;
    };
    let uri = t.uri("region-root");
    let v = env.json(&["init", "--root-key", &uri]);
    assert!(str_field(&v, "RootKey").contains("PKCS#11"), "{v:#}");
    assert!(!region_file(&env, "root.key").exists());
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(region_file(&env, "region.json")).unwrap()).unwrap();
    assert_eq!(cfg["root_key"]["source"], "pkcs11");
    assert_eq!(cfg["root_key"]["uri"], uri.as_str());
    assert_eq!(
        unb64(cfg["root_key"]["sealed_root"].as_str().unwrap()).len(),
        60
    );
    let text = String::from_utf8(std::fs::read(region_file(&env, "region.json")).unwrap()).unwrap();
    assert!(!text.contains(hsm::USER_PIN), "{text}");
    let b = populate(&env, &[]);
    check_kept(&env, &[], &b);
    // Re-running init uses the region (and the object) as they are.
    assert_eq!(env.json(&["init", "--root-key", &uri])["Created"], false);

    // A wrong PIN: exit 7, the line names the region, the token and the PIN file.
    std::fs::write(&t.pin_file, "wrong-pin-0\n").unwrap();
    let line = env.run(&["kms", "list-keys"]).fails(7);
    assert!(
        line.contains(DEFAULT_REGION) && line.contains(&t.label),
        "{line}"
    );
    assert!(line.contains(t.pin_file.to_str().unwrap()), "{line}");
    // The PIN file missing: exit 3, naming the file.
    std::fs::remove_file(&t.pin_file).unwrap();
    let line = env.run(&["kms", "list-keys"]).fails(3);
    assert!(line.contains(t.pin_file.to_str().unwrap()), "{line}");
    std::fs::write(&t.pin_file, format!("{}\n", hsm::USER_PIN)).unwrap();
    env.ok(&["kms", "list-keys"]);

    // The token absent (another token directory): exit 27 naming the token.
    let empty = env.scratch().join("no-tokens");
    std::fs::create_dir_all(&empty).unwrap();
    let conf = env.scratch().join("empty-softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            empty.display()
        ),
    )
    .unwrap();
    let line = env
        .run_env(
            &["kms", "list-keys"],
            &[("SOFTHSM2_CONF", conf.to_str().unwrap())],
        )
        .fails(27);
    assert!(line.contains(&t.label), "{line}");

    // The module not allowed: exit 27 naming it.
    let cfg_path = region_file(&env, "region.json");
    let good = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(
        &cfg_path,
        good.replace(hsm::SOFTHSM_MODULE, "/tmp/not-a-module.so"),
    )
    .unwrap();
    let line = env.run(&["kms", "list-keys"]).fails(27);
    assert!(line.contains("/tmp/not-a-module.so"), "{line}");
    std::fs::write(&cfg_path, &good).unwrap();

    // The object destroyed: exit 27 naming it. The keystore does not open any more.
    hsm::destroy_object(&t, "region-root");
    let line = env.run(&["kms", "list-keys"]).fails(27);
    assert!(line.contains("region-root"), "{line}");
}

#[test]
fn a_pin_value_in_the_uri_is_refused_with_one_line() {
    let env = Env::new();
    let uri = format!(
        "pkcs11:token=t;object=o?module-path={}&pin-value=123456&pin-source=file:/x",
        hsm::SOFTHSM_MODULE
    );
    env.add_secret(b"123456");
    let line = env.run(&["init", "--root-key", &uri]).fails(6);
    assert!(line.contains("pin-source"), "{line}");
    assert!(!env.region_dir(DEFAULT_REGION).join("region.json").exists());
    // Also on an existing region.
    let env = Env::init();
    env.add_secret(b"123456");
    env.run(&["init", "--root-key", &uri]).fails(6);
}

#[test]
fn rotating_an_hsm_root_and_between_kinds() {
    let env = Env::new();
    let Some(t) = hsm::token(env.scratch()) else {
        return;
    };
    env.ok(&["init", "--root-key", &t.uri("root-a")]);
    let v = rotate_and_check(&env, &[], &[], "object=root-a");
    assert!(str_field(&v, "OldRootMaterial").contains("kept"), "{v:#}");
    // To another object (made by the rotation), then to a key file, then back.
    let v = rotate_and_check(
        &env,
        &[],
        &["--root-key", &t.uri("root-b")],
        "object=root-b",
    );
    assert!(
        str_field(&v, "OldRootMaterial").contains("left in the token"),
        "{v:#}"
    );
    rotate_and_check(&env, &[], &["--key-file"], "root.key");
    rotate_and_check(
        &env,
        &[],
        &["--root-key", &t.uri("root-a")],
        "object=root-a",
    );
    assert!(!region_file(&env, "root.key").exists());
}

/// A kill at each step of a rotation (abort: no cleanup runs) leaves a region that opens
/// with one root or the other and keeps every key; a rerun finishes the rotation.
fn crash_at_each_step(global: &[&str], steps: &[&str], setup: impl Fn(&Env)) {
    for step in steps {
        let env = Env::new();
        setup(&env);
        let b = populate(&env, global);
        let o = env.run_env(&[global, ROTATE].concat(), &[(CRASH_ENV, step)]);
        assert_ne!(o.code, 0, "{step}: the crash hook did not stop it: {o:?}");
        // Before the commit the region is the old one; from it on, the new one (the first
        // process to open it finishes the install).
        let committed = *step != "staged";
        env.ok(&[global, &["kms", "list-keys"]].concat());
        assert_eq!(
            env.keystore_bytes(DEFAULT_REGION) != b.keystore,
            committed,
            "{step}"
        );
        assert_eq!(
            region_file(&env, ".root-rotation").exists(),
            !committed,
            "{step}: a committed stage is installed, an uncommitted one waits for a rerun"
        );
        check_kept(&env, global, &b);
        // Rerunning finishes (or makes another) rotation.
        env.ok(&[global, ROTATE].concat());
        assert!(!region_file(&env, ".root-rotation").exists(), "{step}");
        check_kept(&env, global, &b);
        assert_old_root_refused(&env, global, &b);
    }
}

#[test]
fn a_crash_at_each_step_of_a_key_file_rotation_loses_nothing() {
    crash_at_each_step(&[], STEPS, |env| {
        env.ok(&["init"]);
    });
}

#[test]
fn a_crash_at_each_step_of_a_passphrase_rotation_loses_nothing() {
    let pass = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pass.path(), "crash passphrase").unwrap();
    let p = pass.path().to_str().unwrap().to_string();
    crash_at_each_step(&["--passphrase-file", &p], STEPS, |env| {
        env.ok(&["--passphrase-file", &p, "init"]);
    });
}

#[test]
fn a_crash_at_each_step_of_an_hsm_rotation_loses_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let Some(t) = hsm::token(scratch.path()) else {
        return;
    };
    crash_at_each_step(&[], STEPS, |env| {
        env.ok(&[
            "init",
            "--root-key",
            &t.uri(&format!("crash-{}", rand_suffix())),
        ]);
    });
}

/// `kms create-key`s racing rotations, in whatever order the scheduler picks: every key
/// that was reported created is in the keystore afterwards.
#[test]
fn create_keys_racing_rotations_are_not_lost() {
    let env = Env::init();
    let bin = assert_cmd::cargo::cargo_bin("cryptvol");
    let spawn = |args: &[&str]| {
        std::process::Command::new(&bin)
            .arg("--data-dir")
            .arg(&env.data)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut creates = vec![];
    let mut rotations = vec![];
    for i in 0..6 {
        creates.push(spawn(&[
            "kms",
            "create-key",
            "--description",
            &format!("race {i}"),
        ]));
        if i % 2 == 0 {
            rotations.push(spawn(ROTATE));
        }
    }
    let mut made = vec![];
    for c in creates {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{o:?}");
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        made.push(str_field(&v["KeyMetadata"], "KeyId"));
    }
    for r in rotations {
        let o = r.wait_with_output().unwrap();
        assert!(o.status.success(), "{o:?}");
    }
    let keys = env.ok(&["kms", "list-keys"]);
    for k in &made {
        assert!(keys.contains(k.as_str()), "{k} lost: {keys}");
    }
    assert_eq!(env.json(&["audit", "verify"])["Valid"], true);
}

/// docs/formats.md, "Root-key rotation": read with the independent reader, not cryptvol's
/// code. After a rotation the keystore opens under the new root.key; its `derivation_key`
/// opens to the region's first root; the CMK version material is unchanged, re-sealed; and
/// region.json's check value is the new root's.
#[test]
fn doc_a_rotated_keystore_byte_by_byte() {
    use reader::*;
    const CTX_DERIVATION_KEY_SEAL: &str = "cryptvol 2026-12-03 region derivation key seal v1";
    let env = Env::init();
    let first: [u8; 32] = std::fs::read(region_file(&env, "root.key"))
        .unwrap()
        .try_into()
        .unwrap();
    let key = env.create_key();
    let open_body = |root: &[u8; 32]| -> Value {
        let b = env.keystore_bytes(DEFAULT_REGION);
        let n = le32(&b, 32) as usize;
        let plain = gcm_open(
            &derive(CTX_KEYSTORE_SEAL, &[root]),
            &b[20..32],
            &b[..36],
            &b[36..36 + n + 16],
        )
        .expect("the keystore opens under this root");
        serde_json::from_slice(&plain).unwrap()
    };
    let material = |body: &Value, root: &[u8; 32]| -> Vec<u8> {
        let v = &body["keys"][key.as_str()]["versions"][0];
        let mut aad = b"cmk-version".to_vec();
        aad.extend_from_slice(&uuid_bytes(&key));
        aad.extend_from_slice(&1u32.to_le_bytes());
        open_sealed(
            &derive(CTX_KEY_VERSION_SEAL, &[root]),
            &aad,
            &unb64(v["sealed"].as_str().unwrap()),
        )
        .expect("the version opens under this root")
    };
    let before = open_body(&first);
    assert!(before.get("derivation_key").is_none(), "{before:#}");
    let m1 = material(&before, &first);

    env.ok(ROTATE);
    env.ok(ROTATE);
    let now: [u8; 32] = std::fs::read(region_file(&env, "root.key"))
        .unwrap()
        .try_into()
        .unwrap();
    assert_ne!(now, first);
    let after = open_body(&now);
    assert_eq!(material(&after, &now), m1, "the material is unchanged");
    let aad = [
        b"region-derivation-key".as_slice(),
        DEFAULT_REGION.as_bytes(),
    ]
    .concat();
    let d = open_sealed(
        &derive(CTX_DERIVATION_KEY_SEAL, &[&now]),
        &aad,
        &unb64(after["derivation_key"].as_str().unwrap()),
    )
    .expect("derivation_key opens under the current root");
    assert_eq!(d, first, "two rotations later, still the first root");

    // Two rotations, two audit chain successor keys, both sealed under the current root.
    const CTX_AUDIT_CHAIN: &str = "cryptvol 2026-11-29 audit trail chain v1";
    const CTX_AUDIT_CHAIN_KEY_SEAL: &str = "cryptvol 2026-12-03 audit chain key seal v1";
    let sealed = after["audit_chain_keys"]
        .as_array()
        .expect("audit_chain_keys");
    assert_eq!(sealed.len(), 2, "{after:#}");
    let mut chain_keys =
        vec![derive(CTX_AUDIT_CHAIN, &[&first, DEFAULT_REGION.as_bytes()]).to_vec()];
    for (epoch, k) in (1u32..).zip(sealed) {
        let aad = [
            b"region-audit-chain-key".as_slice(),
            DEFAULT_REGION.as_bytes(),
            &epoch.to_le_bytes(),
        ]
        .concat();
        let key = open_sealed(
            &derive(CTX_AUDIT_CHAIN_KEY_SEAL, &[&now]),
            &aad,
            &unb64(k.as_str().unwrap()),
        )
        .expect("an audit chain key opens under the current root");
        assert!(!chain_keys.contains(&key), "epoch {epoch} repeats a key");
        chain_keys.push(key);
    }
    // Every event hashes as formats.md says, under the key of its keyEpoch, and the epochs
    // go 0, then 1, then 2 (each rotation's last event is the first under its key).
    let mut epochs = Vec::new();
    let mut prev = [0u8; 32];
    for line in audit_lines(&env) {
        let line = line.as_str();
        let at = line.rfind(",\"cryptvolChain\":{").expect("a chain member");
        let event = [&line.as_bytes()[..at], b"}"].concat();
        let chain: Value = serde_json::from_str::<Value>(line).unwrap()["cryptvolChain"].clone();
        let seq = chain["seq"].as_u64().unwrap();
        let epoch = chain["keyEpoch"].as_u64().unwrap_or(0) as u32;
        assert_eq!(hex::decode(chain["prev"].as_str().unwrap()).unwrap(), prev);
        let key: [u8; 32] = chain_keys[epoch as usize].clone().try_into().unwrap();
        let mut h = blake3::Hasher::new_keyed(&key);
        if epoch == 0 {
            h.update(b"cryptvol audit event v1");
        } else {
            h.update(b"cryptvol audit event v2");
            h.update(&epoch.to_le_bytes());
        }
        h.update(&seq.to_le_bytes());
        h.update(&prev);
        h.update(&event);
        prev = *h.finalize().as_bytes();
        assert_eq!(
            chain["hash"].as_str().unwrap(),
            hex::encode(prev),
            "event {seq}"
        );
        if epochs.last() != Some(&epoch) {
            epochs.push(epoch);
        }
    }
    assert_eq!(epochs, [0, 1, 2]);
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(region_file(&env, "region.json")).unwrap()).unwrap();
    assert_eq!(
        unb64(cfg["root_key_check"].as_str().unwrap()),
        derive(CTX_ROOT_KEY_CHECK, &[&now])[..16]
    );
}

/// A volume of a token-root region attaches through the region daemon (which opens the
/// region with the PIN file, without a terminal), and still attaches with its data after a
/// rotation of the root key to a key file and back to the token.
#[test]
fn a_volume_of_an_hsm_root_region_attaches_before_and_after_rotations() {
    needs!(Fuse);
    let v = common::mount::VolEnv::uninit();
    let Some(t) = hsm::token(v.scratch()) else {
        return;
    };
    v.ok(&["init", "--root-key", &t.uri("vol-root")]);
    let vol = v.create(&["--size", "64M", "--name", "hv"]);
    let dir = v.dir("hv");
    let data = pattern(1 << 20, 7);
    let path = v.attach(&vol, &dir, &[]);
    {
        use std::io::Write;
        // The volume file has a fixed size: write in place, no truncation.
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
    }
    v.ok(&["detach", dir.to_str().unwrap()]);
    for how in [&["--key-file"][..], &["--root-key", &t.uri("vol-root")][..]] {
        v.ok(&[ROTATE, how].concat());
        let path = v.attach(&vol, &dir, &[]);
        let back = std::fs::read(&path).unwrap();
        assert_eq!(
            &back[..data.len()],
            &data[..],
            "after rotate-root-key {how:?}"
        );
        v.ok(&["detach", dir.to_str().unwrap()]);
    }
}

/// `kms serve` opens a token-root region without a terminal (the PIN from its file), serves
/// a volume's GenerateDataKey for another data dir, and after a rotation of the root key
/// (same object, new root) keeps serving without a restart: it opens the new root itself.
#[test]
fn kms_serve_opens_an_hsm_root_region_and_follows_a_rotation() {
    let kms_side = Env::new();
    let Some(t) = hsm::token(kms_side.scratch()) else {
        return;
    };
    kms_side.ok(&["init", "--root-key", &t.uri("serve-root")]);
    let user = common::server::KeyUser::new(&kms_side, "vols");
    let server = common::server::KmsServer::start(&kms_side);
    let v = Env::init();
    v.add_secret(user.secret.as_bytes());
    let missing_ca = v.scratch().join("missing.pem");
    let envs = [
        ("AWS_ACCESS_KEY_ID", user.id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", user.secret.as_str()),
        ("CRYPTVOL_KMS_ENDPOINT", server.endpoint.as_str()),
        ("AWS_CA_BUNDLE", missing_ca.to_str().unwrap()),
    ];
    let create = |name: &str| {
        v.run_env(
            &[
                "volume",
                "create",
                "--size",
                "64M",
                "--name",
                name,
                "--kms-key",
                &user.key,
            ],
            &envs,
        )
        .ok()
    };
    create("before");
    kms_side.ok(ROTATE);
    create("after");
    let events = kms_side.json(&["audit", "lookup", "--principal", "vols"]);
    let n = events["Events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["eventName"] == "GenerateDataKey")
        .count();
    assert_eq!(n, 2, "{events:#}");
    // The server, opened before the rotation, logged its second call under the chain's
    // new key (an event under the old one after the switch would not verify).
    let report = kms_side.json(&["audit", "verify"]);
    assert_eq!(report["Valid"], true, "{report:#}");
    let epochs: Vec<u64> = audit_lines(&kms_side)
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["eventName"] == "GenerateDataKey")
        .map(|e| e["cryptvolChain"]["keyEpoch"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(epochs, [0, 1]);
    server.stop();
}

/// A key of a custom key store (material in a token, its PIN sealed in the keystore body)
/// still encrypts and decrypts after the root key is rotated: the store's record and the
/// version's object id are re-sealed with the rest of the body.
#[test]
fn a_custom_key_store_key_survives_a_root_key_rotation() {
    let env = Env::init();
    let Some(t) = hsm::token(env.scratch()) else {
        return;
    };
    env.add_secret(hsm::USER_PIN.as_bytes());
    let out = env.json(&[
        "kms",
        "create-custom-key-store",
        "--custom-key-store-name",
        "rk",
        "--pkcs11-module",
        hsm::SOFTHSM_MODULE,
        "--token-label",
        &t.label,
        "--key-store-password-file",
        t.pin_file.to_str().unwrap(),
    ]);
    let store = str_field(&out, "CustomKeyStoreId");
    env.ok(&[
        "kms",
        "connect-custom-key-store",
        "--custom-key-store-id",
        &store,
    ]);
    let key = env.json(&[
        "kms",
        "create-key",
        "--origin",
        "AWS_CLOUDHSM",
        "--custom-key-store-id",
        &store,
    ]);
    let key = str_field(&key["KeyMetadata"], "KeyId");
    let blob = env.encrypt(&key, b"in the token", None);
    for how in [
        &[][..],
        &["--root-key", &t.uri("root-beside-the-store")][..],
    ] {
        env.ok(&[ROTATE, how].concat());
        assert_eq!(env.decrypt(&blob, None), b"in the token", "{how:?}");
        let again = env.encrypt(&key, b"after", None);
        assert_eq!(env.decrypt(&again, None), b"after");
    }
}
