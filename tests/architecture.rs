//! Keeps the house in order: the imports of `src/` (every `crate::…`, `super::…` and
//! `self::…` path outside comments) against the layers that `docs/ARCHITECTURE.md` lists
//! under "Layers".
//!
//! - A module imports only from its own layer or a lower one (no arrow runs back up).
//! - No two files import each other in a circle. A module's own submodules are its parts,
//!   so a `mod.rs` using (or re-exporting) its children is not counted as an import;
//!   everything else is, a child using its parent included.
//! - Every top-level module of `src/lib.rs` has a layer.
//!
//! The order is read from the document, not kept here: moving a module to another layer
//! is a change of the architecture, made in the document first.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The layers of `docs/ARCHITECTURE.md`, bottom first: the numbered list under
/// `## Layers`, each item's backticked names.
fn layers() -> Vec<Vec<String>> {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("docs/ARCHITECTURE.md"))
        .expect("read docs/ARCHITECTURE.md");
    let mut in_section = false;
    let mut layers = Vec::new();
    for line in doc.lines() {
        if line.starts_with("## ") {
            in_section = line.trim() == "## Layers";
            continue;
        }
        if !in_section {
            continue;
        }
        let Some((number, rest)) = line.split_once(". ") else {
            continue;
        };
        if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        // The names before the first dash; what follows explains the layer.
        let names = rest.split(" — ").next().unwrap_or(rest);
        let modules: Vec<String> = names
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        layers.push(modules);
    }
    assert!(
        !layers.is_empty(),
        "docs/ARCHITECTURE.md has no numbered list under `## Layers`"
    );
    layers
}

/// Every `.rs` file of the library (not `src/bin`, whose binaries are other crates).
fn source_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read a source directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "bin") {
                    walk(&path, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&Path::new(ROOT).join("src"), &mut files);
    files.sort();
    files
}

/// The module path of a file: `src/http/handlers.rs` → `[http, handlers]`,
/// `src/http/mod.rs` → `[http]`, `src/lib.rs` → `[]`.
fn module_of(file: &Path) -> Vec<String> {
    let rel = file
        .strip_prefix(Path::new(ROOT).join("src"))
        .expect("under src/");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if stem != "mod" && stem != "lib" {
            parts.push(stem.to_owned());
        }
    }
    parts
}

/// The file that defines the longest prefix of `path` that is a module with a file.
fn file_of(path: &[String], files: &BTreeMap<Vec<String>, PathBuf>) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|prefix| files.contains_key(prefix))
}

/// The code of a file without its comment lines (doc comments mention paths that are no
/// imports).
fn code_of(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module paths `code` (in module `module`) refers to, as absolute paths: each
/// `crate::a::b`, `super::…`, `self::…`, and each name of a `{…}` group after one.
fn referenced_paths(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let bytes: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(is_ident(bytes[i - 1]) || bytes[i - 1] == ':');
        if !starts_word || !is_ident(bytes[i]) {
            i += 1;
            continue;
        }
        // Read `ident(::ident)*`.
        let mut segments = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while j < bytes.len() && is_ident(bytes[j]) {
                j += 1;
            }
            segments.push(bytes[start..j].iter().collect::<String>());
            if j + 2 < bytes.len() && bytes[j] == ':' && bytes[j + 1] == ':' {
                if is_ident(bytes[j + 2]) {
                    j += 2;
                    continue;
                }
                if bytes[j + 2] == '{' {
                    j += 2;
                }
            }
            break;
        }
        let mut base: Vec<String> = match segments[0].as_str() {
            "crate" => Vec::new(),
            "super" | "self" => module.to_vec(),
            _ => {
                i = j.max(i + 1);
                continue;
            }
        };
        let mut rest = &segments[..];
        while let Some(first) = rest.first() {
            match first.as_str() {
                "crate" => {}
                "self" => {}
                "super" => {
                    base.pop();
                }
                _ => break,
            }
            rest = &rest[1..];
        }
        base.extend(rest.iter().cloned());
        out.push(base.clone());
        // A group: `path::{a, b::c, self}` refers to each of its first names too.
        if j < bytes.len() && bytes[j] == '{' {
            let mut depth = 0;
            let mut k = j;
            let mut item = String::new();
            let mut items = Vec::new();
            while k < bytes.len() {
                let c = bytes[k];
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => items.push(std::mem::take(&mut item)),
                    _ if depth == 1 => item.push(c),
                    _ => {}
                }
                k += 1;
            }
            items.push(item);
            for item in items {
                let first: String = item.trim().chars().take_while(|&c| is_ident(c)).collect();
                if !first.is_empty() && first != "self" {
                    let mut path = base.clone();
                    path.push(first);
                    out.push(path);
                }
            }
            j = k;
        }
        i = j.max(i + 1);
    }
    out
}

/// Every file (by module path) and the files it imports from.
fn imports() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let files: BTreeMap<Vec<String>, PathBuf> = source_files()
        .into_iter()
        .map(|f| (module_of(&f), f))
        .collect();
    let mut graph = BTreeMap::new();
    for (module, file) in &files {
        let text = std::fs::read_to_string(file).expect("read a source file");
        let mut targets = BTreeSet::new();
        for path in referenced_paths(&code_of(&text), module) {
            let Some(target) = file_of(&path, &files) else {
                continue;
            };
            // A module's own submodules are its parts, not imports.
            if target == *module || target.starts_with(module) {
                continue;
            }
            targets.insert(target);
        }
        graph.insert(module.clone(), targets);
    }
    graph
}

fn show(module: &[String]) -> String {
    if module.is_empty() {
        "lib".to_owned()
    } else {
        module.join("::")
    }
}

#[test]
fn every_module_has_a_layer_and_imports_only_from_its_own_layer_or_below() {
    let layers = layers();
    let layer_of: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(n, names)| names.iter().map(move |m| (m.as_str(), n + 1)))
        .collect();
    let graph = imports();
    let top_level: BTreeSet<&str> = graph
        .keys()
        .filter_map(|m| m.first().map(String::as_str))
        .collect();
    let unlisted: Vec<&&str> = top_level
        .iter()
        .filter(|m| !layer_of.contains_key(**m))
        .collect();
    assert!(
        unlisted.is_empty(),
        "modules without a layer in docs/ARCHITECTURE.md: {unlisted:?}"
    );
    let mut back = Vec::new();
    for (from, targets) in &graph {
        let Some(from_top) = from.first() else {
            continue;
        };
        for to in targets {
            let Some(to_top) = to.first() else { continue };
            let (a, b) = (layer_of[from_top.as_str()], layer_of[to_top.as_str()]);
            if b > a {
                back.push(format!(
                    "{} (layer {a}) imports {} (layer {b})",
                    show(from),
                    show(to)
                ));
            }
        }
    }
    assert!(
        back.is_empty(),
        "imports that run up the layers of docs/ARCHITECTURE.md:\n{}",
        back.join("\n")
    );
}

#[test]
fn no_files_import_each_other_in_a_circle() {
    let graph = imports();
    // Tarjan's strongly connected components: any with two files or more is a circle.
    struct State<'a> {
        graph: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on_stack: BTreeSet<&'a Vec<String>>,
        circles: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Vec<String>) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let Some((w, _)) = s.graph.get_key_value(w) else {
                continue;
            };
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(show(w));
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.circles.push(component);
            }
        }
    }
    let mut state = State {
        graph: &graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        circles: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v) {
            visit(&mut state, v);
        }
    }
    assert!(
        state.circles.is_empty(),
        "files that import each other in a circle: {:?}",
        state.circles
    );
}

#[test]
fn the_import_reader_sees_paths_groups_and_parents() {
    let module = vec!["http".to_owned(), "handlers".to_owned()];
    let code = "use super::{ApiError, extract::Caller};\nuse crate::store::{self, memory};\nlet x = crate::shared::new_id();\n";
    let paths: Vec<String> = referenced_paths(code, &module)
        .iter()
        .map(|p| p.join("::"))
        .collect();
    for expected in [
        "http",
        "http::ApiError",
        "http::extract",
        "store",
        "store::memory",
        "shared::new_id",
    ] {
        assert!(
            paths.iter().any(|p| p == expected),
            "{expected} in {paths:?}"
        );
    }
    // The real tree: the HTTP layer does import the domain (the reader is not blind).
    let graph = imports();
    let handlers = graph.get(&module).expect("src/http/handlers.rs is read");
    assert!(
        handlers
            .iter()
            .any(|t| t.first().is_some_and(|m| m == "domain"))
    );
}

/// The files of `src/` that may name a profile's variant (`Profile::Awtrix3`,
/// `ProfileName::Lametric`, …), each with why: the registration and each firmware's own
/// code. Everything else (the core, presence, the MQTT transport, start-up, the edge) asks
/// the device's `Profile` and never names its firmware (docs/ARCHITECTURE.md, "A device
/// profile, the device-driver seam"). A path ending in `/` is a whole directory.
const FIRMWARE_FILES: &[(&str, &str)] = &[
    (
        "domain/profile.rs",
        "the registration: the variants and their arms",
    ),
    (
        "devices.rs",
        "the registration: each profile's keys in DEVICES_FILE",
    ),
    ("domain/generic.rs", "the generic firmware's module"),
    ("domain/awtrix3.rs", "the AWTRIX 3 firmware's module"),
    ("domain/lametric.rs", "the LaMetric firmware's module"),
    (
        "transport/lametric.rs",
        "how a LaMetric is reached: its own HTTP transport",
    ),
    (
        "clock/",
        "the virtual clocks: the device side of each firmware",
    ),
    (
        "cli/watch.rs",
        "`clockctl watch`: which virtual clock to be",
    ),
    ("demo.rs", "the demo's own clocks, one of each firmware"),
];

/// The variants of `enum <name>` in `domain/profile.rs`.
fn variants_of(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("src/domain/profile.rs"))
        .expect("read src/domain/profile.rs");
    let start = text
        .find(&format!("pub enum {name} {{"))
        .unwrap_or_else(|| panic!("src/domain/profile.rs has no `pub enum {name}`"));
    let body = &text[start..];
    let body = &body[body.find('{').expect("an enum body") + 1..body.find("\n}").expect("its end")];
    body.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//") && !l.starts_with('#'))
        .filter_map(|l| {
            let ident: String = l
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            ident
                .starts_with(|c: char| c.is_ascii_uppercase())
                .then_some(ident)
        })
        .collect()
}

/// `text` up to its test module (`#[cfg(test)]` followed by `mod …`), without comments.
fn code_outside_tests(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let end = (0..lines.len())
        .find(|&i| {
            lines[i].trim() == "#[cfg(test)]"
                && lines[i + 1..]
                    .iter()
                    .find(|l| !l.trim().is_empty())
                    .is_some_and(|l| l.trim_start().starts_with("mod "))
        })
        .unwrap_or(lines.len());
    code_of(&lines[..end].join("\n"))
}

#[test]
fn only_the_registration_and_each_firmwares_own_files_name_a_profile() {
    let mut names = Vec::new();
    for enum_name in ["Profile", "ProfileName"] {
        let variants = variants_of(enum_name);
        assert!(
            variants.len() >= 2,
            "the variants of {enum_name} are read from src/domain/profile.rs: {variants:?}"
        );
        names.extend(variants.iter().map(|v| format!("{enum_name}::{v}")));
    }
    let src = Path::new(ROOT).join("src");
    for (allowed, _) in FIRMWARE_FILES {
        assert!(
            src.join(allowed).exists(),
            "FIRMWARE_FILES lists src/{allowed}, which is gone"
        );
    }
    let mut named = Vec::new();
    for file in source_files() {
        let rel = file
            .strip_prefix(&src)
            .expect("under src/")
            .to_string_lossy()
            .replace('\\', "/");
        if FIRMWARE_FILES.iter().any(|(allowed, _)| {
            rel == *allowed || (allowed.ends_with('/') && rel.starts_with(allowed))
        }) {
            continue;
        }
        let code = code_outside_tests(&std::fs::read_to_string(&file).expect("read a source file"));
        for name in &names {
            let found = code.match_indices(name.as_str()).any(|(at, _)| {
                let before = code[..at].chars().next_back();
                let after = code[at + name.len()..].chars().next();
                !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            });
            if found {
                named.push(format!("src/{rel} names {name}"));
            }
        }
    }
    assert!(
        named.is_empty(),
        "outside the registration and the firmware modules, ask the device's Profile (add a method in domain/profile.rs) instead of naming its firmware:\n{}",
        named.join("\n")
    );
}
