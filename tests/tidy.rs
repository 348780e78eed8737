//! The tree keeps the shape ARCHITECTURE.md describes: every source file
//! says what it owns, foreign crates stay behind the crate that wraps them,
//! and the codemap names only files and crates that exist.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return out;
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read a source directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Each crate's directory name and its source files.
fn crates() -> Vec<(String, Vec<PathBuf>)> {
    let mut out: Vec<_> = std::fs::read_dir(root().join("crates"))
        .expect("crates/")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.join("Cargo.toml").exists())
        .map(|p| {
            let name = p
                .file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned();
            (name, rust_files(&p.join("src")))
        })
        .collect();
    out.sort();
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    let missing: Vec<String> = crates()
        .into_iter()
        .flat_map(|(_, files)| files)
        .filter(|f| {
            let text = std::fs::read_to_string(f).expect("read a source file");
            !text.trim_start().starts_with("//!")
        })
        .map(|f| relative(&f))
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not say what they own (a `//!` doc first): {missing:#?}"
    );
}

#[test]
fn lapin_and_sqlx_stay_behind_their_crates() {
    let mut strays = Vec::new();
    for (name, _) in crates() {
        let dir = root().join("crates").join(&name);
        let files = rust_files(&dir.join("src"))
            .into_iter()
            .chain(rust_files(&dir.join("tests")));
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read a source file");
            for (foreign, owner) in [("lapin", "courier-amqp"), ("sqlx", "courier-store")] {
                let named = text.contains(&format!("{foreign}::"))
                    || text.contains(&format!("use {foreign}"));
                if named && name != owner {
                    strays.push(format!(
                        "{} names {foreign} (only {owner} may)",
                        relative(&file)
                    ));
                }
            }
        }
    }
    assert!(strays.is_empty(), "{strays:#?}");
}

#[test]
fn the_codemap_names_only_what_exists_and_every_crate() {
    let map = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let crates = crates();
    for (name, _) in &crates {
        assert!(
            map.contains(&format!("### {name}")),
            "ARCHITECTURE.md has no section for crates/{name}"
        );
    }
    // Every `file.rs` it names is a file of some crate (or of tests/).
    let known: Vec<String> = crates
        .iter()
        .flat_map(|(name, files)| {
            let tests = rust_files(&root().join("crates").join(name).join("tests"));
            files
                .iter()
                .chain(tests.iter())
                .map(|f| relative(f))
                .collect::<Vec<_>>()
        })
        .chain(
            rust_files(&root().join("tests"))
                .iter()
                .map(|f| relative(f)),
        )
        .collect();
    let mut stale = Vec::new();
    for piece in map.split('`').skip(1).step_by(2) {
        if !piece.ends_with(".rs") || piece.contains(' ') {
            continue;
        }
        if !known
            .iter()
            .any(|k| k == piece || k.ends_with(&format!("/{piece}")))
        {
            stale.push(piece.to_owned());
        }
    }
    assert!(
        stale.is_empty(),
        "ARCHITECTURE.md names files that do not exist: {stale:?}"
    );
}
