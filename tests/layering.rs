//! The layering of docs/architecture.md, enforced: a module may use only the modules of
//! lower layers, never one of its own layer or above. The test reads every `crate::`
//! path in src/ (use lines and inline paths alike, comments excluded) and fails with each
//! offending line.

use std::path::{Path, PathBuf};

/// The layers, lowest first. Modules on one line are peers: neither may use the other.
const LAYERS: &[&[&str]] = &[
    &["crypto", "format_version"],
    &["policy", "sys"],
    &["aws"],
    &["datadir"],
    &["iam", "audit"],
    &["kms"],
    &["volume"],
    &["snapshot"],
    &["daemon"],
    &["server"],
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file of src/ belongs to (`src/kms/embedded/keys.rs` → `kms`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// How many `super::` steps lead from `file` to the crate root: 1 from `src/kms.rs` or
/// `src/kms/mod.rs`, 2 from `src/kms/blob.rs`, and so on.
fn depth_of(src: &Path, file: &Path) -> usize {
    let rel = file.strip_prefix(src).unwrap();
    let parts = rel.components().count();
    if rel.file_name().is_some_and(|n| n == "mod.rs") {
        parts - 1
    } else {
        parts
    }
}

/// The top-level modules a `super::super::NAME` path reaches when its `super`s climb to
/// the crate root from a file `depth` steps below it.
fn super_paths(line: &str, depth: usize) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let chain = "super::".repeat(depth);
    let mut out = vec![];
    let mut rest = code;
    while let Some(i) = rest.find(&chain) {
        let after = &rest[i + chain.len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && name != "super" {
            out.push(name);
        }
        rest = after;
    }
    out
}

/// The modules named by `crate::NAME` in one line of code (comments stripped).
fn crate_paths(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut out = vec![];
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // `crate::name!` is an exported macro, which lives at the crate root.
        let is_macro = after[name.len()..].starts_with('!');
        if !name.is_empty() && !is_macro {
            out.push(name);
        }
        rest = after;
    }
    // `use crate::{a, b}` names several modules at once.
    if let Some(i) = code.find("crate::{") {
        let inner = &code[i + "crate::{".len()..];
        for part in inner.split([',', '}']) {
            let name: String = part
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

/// Every use of a module at the user's layer or above, as "file:line: text".
fn violations(src: &Path) -> (Vec<String>, Vec<String>) {
    let mut files = vec![];
    rust_files(src, &mut files);
    files.sort();
    let mut bad = vec![];
    let mut unknown = vec![];
    for f in files {
        let user = module_of(src, &f);
        if user == "lib" || user == "main" {
            continue;
        }
        let Some(user_layer) = layer_of(&user) else {
            unknown.push(format!("{}: module `{user}` is in no layer", f.display()));
            continue;
        };
        let text = std::fs::read_to_string(&f).unwrap();
        let depth = depth_of(src, &f);
        for (n, line) in text.lines().enumerate() {
            // `cryptvol::` inside the crate would be a way around `crate::`.
            if line.split("//").next().unwrap_or("").contains("cryptvol::") {
                bad.push(format!(
                    "{}:{}: use crate::, not cryptvol::: {}",
                    f.display(),
                    n + 1,
                    line.trim()
                ));
            }
            let mut used_here = crate_paths(line);
            used_here.extend(super_paths(line, depth));
            for used in used_here {
                if used == user {
                    continue;
                }
                match layer_of(&used) {
                    None => unknown.push(format!(
                        "{}:{}: `crate::{used}` is in no layer: {}",
                        f.display(),
                        n + 1,
                        line.trim()
                    )),
                    Some(l) if l >= user_layer => bad.push(format!(
                        "{}:{}: {user} may not use {used} ({}): {}",
                        f.display(),
                        n + 1,
                        if l == user_layer {
                            "a peer"
                        } else {
                            "a higher layer"
                        },
                        line.trim()
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    (bad, unknown)
}

#[test]
fn every_module_uses_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (bad, unknown) = violations(&src);
    assert!(
        unknown.is_empty(),
        "add these modules to LAYERS (and to docs/architecture.md):\n{}",
        unknown.join("\n")
    );
    assert!(
        bad.is_empty(),
        "{} import(s) against the layering of docs/architecture.md:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn the_checker_catches_an_upward_use() {
    // The checker itself must be able to fail: a volume file naming the daemon, a peer
    // naming a peer, and a `use crate::{..}` group are all caught; a comment is not.
    let d = tempfile::tempdir().unwrap();
    let src = d.path();
    std::fs::create_dir_all(src.join("volume")).unwrap();
    std::fs::create_dir_all(src.join("iam")).unwrap();
    std::fs::write(
        src.join("volume/a.rs"),
        "use crate::daemon::owner::PoolOwner;\n// crate::cli is fine in a comment\nuse crate::{kms, server};\n",
    )
    .unwrap();
    std::fs::write(src.join("iam/b.rs"), "fn f() { crate::audit::x(); }\n").unwrap();
    // From src/kms/mod.rs one `super::` is the crate root; from src/kms/c.rs, two.
    std::fs::create_dir_all(src.join("kms")).unwrap();
    std::fs::write(
        src.join("kms/mod.rs"),
        "use super::snapshot::X;\nuse super::aws::Y;\n",
    )
    .unwrap();
    std::fs::write(
        src.join("kms/c.rs"),
        "use super::super::daemon::Z;\nuse super::blob::B;\n",
    )
    .unwrap();
    let (bad, unknown) = violations(src);
    assert!(unknown.is_empty(), "{unknown:?}");
    for expected in [
        "iam may not use audit (a peer)",
        "kms may not use daemon (a higher layer)",
        "kms may not use snapshot (a higher layer)",
        "volume may not use daemon (a higher layer)",
        "volume may not use server (a higher layer)",
    ] {
        assert!(
            bad.iter().any(|b| b.contains(expected)),
            "{expected}: {bad:#?}"
        );
    }
    // super::aws from kms/mod.rs and super::blob from kms/c.rs are fine; the comment too.
    assert_eq!(bad.len(), 5, "{bad:#?}");
}
