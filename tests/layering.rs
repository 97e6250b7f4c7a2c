//! The layering of docs/architecture.md, enforced: a module may use only the modules of
//! lower layers, never one of its own layer or above. The test reads every path in src/
//! (use trees expanded, inline paths, `super::` chains that climb to the crate root, files
//! placed by `#[path]`, comments and strings excluded) and fails with each offending line.

#[path = "layering/reader.rs"]
mod reader;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use reader::{FoundPath, paths_of};

/// The layers, lowest first. Modules on one line are peers: neither may use the other.
const LAYERS: &[&[&str]] = &[
    &["crypto", "format_version"],
    &["policy", "sys"],
    &["hsm"],
    &["aws"],
    &["datadir"],
    &["iam", "audit"],
    &["kms"],
    &["volume", "secrets"],
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

// ---- resolving paths to top-level modules -----------------------------------------

/// `a/b/../c` → `a/c`, so a `#[path]` file is found under the name `rust_files` gave it.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// Each file's module path (`src/kms/embedded/keys.rs` → `kms::embedded::keys`; a
/// `mod.rs` is its directory; a file included by `#[path]` is its includer's child).
fn module_paths(src: &Path, files: &[PathBuf]) -> HashMap<PathBuf, Vec<String>> {
    let mut m = HashMap::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap();
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| {
                c.as_os_str()
                    .to_string_lossy()
                    .trim_end_matches(".rs")
                    .to_string()
            })
            .collect();
        if parts.last().is_some_and(|s| s == "mod") {
            parts.pop();
        }
        m.insert(f.clone(), parts);
    }
    // A `#[path]` child may declare children of its own: settle in a few rounds.
    for _ in 0..4 {
        for f in files {
            let (_, mods) = paths_of(&std::fs::read_to_string(f).unwrap());
            for (p, name) in mods {
                let child = normalize(&f.parent().unwrap().join(p));
                let mut path = m[f].clone();
                path.push(name);
                m.insert(child, path);
            }
        }
    }
    m
}

/// What `found`, written in a module at `module` (inline blocks included), names at the
/// crate's top level: Ok(Some(name)), Ok(None) for something inside its own module or
/// outside the crate, Err(why) for a way around the check (a second name or a glob of
/// the crate root, `cryptvol::` from inside the crate).
fn top_module(found: &FoundPath, module: &[String]) -> Result<Option<String>, String> {
    let s = &found.segments;
    let depth = module.len() + found.inline_depth;
    let at_root = |k: usize| -> Result<Option<String>, String> {
        match s.get(k).map(String::as_str) {
            None if found.renamed => Err("a second name for the crate root".into()),
            Some("*") => Err("a glob of the crate root".into()),
            None => Ok(None),
            Some(name) => Ok(Some(name.to_string())),
        }
    };
    match s.first().map(String::as_str) {
        Some("crate") => at_root(1),
        Some("cryptvol") => Err("cryptvol:: inside the crate (use crate::)".into()),
        Some("super") => {
            let k = s.iter().take_while(|x| *x == "super").count();
            if k >= depth { at_root(k) } else { Ok(None) }
        }
        _ => Ok(None),
    }
}

/// Every use of a module at the user's layer or above, as "file:line: text"; and the
/// modules the check does not know.
fn violations(src: &Path) -> (Vec<String>, Vec<String>) {
    let mut files = vec![];
    rust_files(src, &mut files);
    files.sort();
    let modules = module_paths(src, &files);
    let (mut bad, mut unknown) = (vec![], vec![]);
    for f in &files {
        let path = &modules[&normalize(f)];
        let user = path.first().cloned().unwrap_or_default();
        if user == "lib" || user == "main" {
            continue;
        }
        let Some(user_layer) = layer_of(&user) else {
            unknown.push(format!("{}: module `{user}` is in no layer", f.display()));
            continue;
        };
        // A file that `#[path]` put into another module than its directory's.
        let dir_module = module_of(src, f);
        if dir_module != user {
            bad.push(format!(
                "{}: is compiled as part of {user} by #[path] but lives in {dir_module}",
                f.display()
            ));
        }
        let text = std::fs::read_to_string(f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let (found, _) = paths_of(&text);
        for p in found {
            let shown = lines.get(p.line - 1).map_or("", |l| l.trim());
            let at = format!("{}:{}", f.display(), p.line);
            match top_module(&p, path) {
                Err(why) => bad.push(format!("{at}: {user} hides what it uses ({why}): {shown}")),
                Ok(None) => {}
                Ok(Some(used)) if used == user => {}
                Ok(Some(used)) => match layer_of(&used) {
                    None => unknown.push(format!("{at}: `{used}` is in no layer: {shown}")),
                    Some(l) if l >= user_layer => bad.push(format!(
                        "{at}: {user} may not use {used} ({}): {shown}",
                        if l == user_layer {
                            "a peer"
                        } else {
                            "a higher layer"
                        }
                    )),
                    Some(_) => {}
                },
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

#[test]
fn the_checker_sees_through_groups_supers_inline_modules_paths_and_aliases() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path();
    let write = |p: &str, text: &str| {
        let p = src.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    // A group spread over lines, as rustfmt writes long ones.
    write(
        "volume/a.rs",
        "use crate::{\n    daemon::owner::PoolOwner,\n    cli::args::Args,\n};\n",
    );
    // A group after a super chain that reaches the root; an inline module adds a level.
    write(
        "volume/b.rs",
        "use super::super::{daemon::Owner, kms::Blob};\nmod tests {\n    use super::super::super::server::X;\n    use super::super::pool::Y;\n}\n",
    );
    // #[path] makes a child one level deeper than its file suggests.
    write("kms/g.rs", "#[path = \"g_child.rs\"]\nmod child;\n");
    write(
        "kms/g_child.rs",
        "use super::super::super::server::T;\nuse super::super::volume::V;\n",
    );
    // #[path] into another module's directory.
    write(
        "crypto/mod.rs",
        "#[path = \"../cli/inner.rs\"]\nmod sneaky;\n",
    );
    write("cli/inner.rs", "pub fn f() {}\n");
    // Second names and globs of the crate root.
    write(
        "aws/c.rs",
        "use crate as root;\nextern crate self as cv;\nuse crate::*;\n",
    );
    // Strings and comments hide nothing, and are not paths.
    write(
        "iam/d.rs",
        "fn f() { let u = \"http://x\"; crate::daemon::spawn(); }\nfn g() { crate :: server :: run(); }\nuse crate::{audit}; use crate::{kms};\n/* crate::volume */ const S: &str = \"crate::cli\";\n",
    );
    let (bad, unknown) = violations(src);
    assert!(unknown.is_empty(), "{unknown:#?}");
    for expected in [
        "a.rs:2: volume may not use daemon",
        "a.rs:3: volume may not use cli",
        "b.rs:1: volume may not use daemon",
        "b.rs:3: volume may not use server",
        "g_child.rs:1: kms may not use server",
        "inner.rs: is compiled as part of crypto by #[path] but lives in cli",
        "c.rs:1: aws hides what it uses (a second name for the crate root)",
        "c.rs:2: aws hides what it uses (a second name for the crate root)",
        "c.rs:3: aws hides what it uses (a glob of the crate root)",
        "d.rs:1: iam may not use daemon",
        "d.rs:2: iam may not use server",
        "d.rs:3: iam may not use audit (a peer)",
        "d.rs:3: iam may not use kms",
    ] {
        assert!(
            bad.iter().any(|b| b.contains(expected)),
            "missing {expected:?} in {bad:#?}"
        );
    }
    // b.rs's kms (lower), pool (inside volume), g_child's volume (inside kms), the comment
    // and the string are not findings; neither is anything else.
    assert_eq!(bad.len(), 13, "{bad:#?}");
}
