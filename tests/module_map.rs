//! `src/lib.rs`'s module map says dependencies point down the list, never
//! up. This test reads the map and every source file and holds it to
//! that: a module names no module listed above it (`crate::X`), except a
//! module's `config` submodule (its section's struct), a leaf that
//! `config` reads. Every module `lib.rs` declares is on the map.

use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The map's modules, top first: lines `//! - [`name`]` or `//! - `name``.
fn map() -> Vec<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.strip_prefix("//! - "))
        .filter_map(|l| {
            let l = l.trim_start_matches('[').strip_prefix('`')?;
            Some(l[..l.find('`')?].to_owned())
        })
        .collect()
}

/// `module`'s files: `src/module.rs`, or everything under `src/module/`.
fn files(module: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    let file = src().join(format!("{module}.rs"));
    if file.exists() {
        out.push(file);
    }
    let dir = src().join(module);
    if dir.is_dir() {
        walk(&dir, &mut out);
    }
    out
}

/// The modules `code` names as `crate::X`, X not followed by `::config`.
fn named(code: &str) -> Vec<&str> {
    code.match_indices("crate::")
        .filter_map(|(at, _)| {
            let rest = &code[at + "crate::".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..end];
            (!rest[end..].starts_with("::config")).then_some(name)
        })
        .collect()
}

#[test]
fn every_module_names_only_modules_below_it_on_the_map() {
    let map = map();
    assert!(
        map.len() > 10,
        "the map was not found in src/lib.rs: {map:?}"
    );
    let config_at = map
        .iter()
        .position(|m| m == "config")
        .expect("config on the map");
    let mut found = Vec::new();
    for (i, module) in map.iter().enumerate() {
        for file in files(module) {
            let text = std::fs::read_to_string(&file).unwrap();
            // A section's struct names nothing at or above `config`,
            // its own module included (only through `super::`).
            let leaf = file.file_name().is_some_and(|n| n == "config.rs") && module != "config";
            let forbidden = match leaf {
                true => &map[..=config_at.max(i)],
                false => &map[..i],
            };
            for (n, line) in text.lines().enumerate() {
                // Code only: what follows `//` is a comment (or a URL in
                // a string, which names no module either).
                let code = line.split("//").next().unwrap_or("");
                for name in named(code) {
                    if forbidden.iter().any(|m| m == name) {
                        found.push(format!(
                            "{}:{}: {module} names {name}",
                            file.display(),
                            n + 1
                        ));
                    }
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "dependencies that point up the map:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_module_lib_rs_declares_is_on_the_map() {
    let map = map();
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| {
            l.strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("mod "))
        })
        .map(|l| l.trim_end_matches(';'))
        .collect();
    assert!(declared.len() > 10, "{declared:?}");
    for module in declared {
        assert!(
            map.iter().any(|m| m == module),
            "{module} is not on lib.rs's map"
        );
    }
}
