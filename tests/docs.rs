//! Keeps the documentation honest: `README.md` and `docs/*.md` link only to files and
//! headings that exist, `docs/configuration.md` documents exactly the variables that
//! `src/config.rs` reads (and `docs/clockctl.md` exactly those of `clockctl`), and the
//! example files the docs point to are accepted by the code.
//!
//! The variables are found in the source text, not in a list kept here: a new
//! `r.int("NEW_VARIABLE", ..)` without a line in the docs fails this test.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

const CONFIG_RS: &str = include_str!("../src/config.rs");
const CLI_SETTINGS_RS: &str = include_str!("../src/cli/settings.rs");
const CLI_ARGS_RS: &str = include_str!("../src/cli/args.rs");
const EXAMPLE_ENV: &str = include_str!("../examples/clock-server.env");

/// `README.md` and every `docs/*.md`, relative to the repository root.
fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("docs"))
        .expect("read docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| p.strip_prefix(ROOT).expect("under the root").to_path_buf())
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

fn read(rel: &Path) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel))
        .unwrap_or_else(|e| panic!("read {}: {e}", rel.display()))
}

/// The lines outside fenced code blocks (```…```), with their 1-based numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// `line` without its inline code spans (`…`), which may contain `](` that is no link.
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code {
            out.push(c);
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, code marks and punctuation dropped (but `-`
/// and `_`), spaces to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every heading anchor of a Markdown file; a repeated heading gets `-1`, `-2`, ...
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if hashes == 0 || hashes > 6 || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(&line[hashes..]);
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// The targets of the inline links `[text](target)` outside code, with line numbers.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (number, line) in prose_lines(text) {
        let line = without_code_spans(line);
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            // `[text](target "title")`: the target is the first word.
            let target = after[..end].split_whitespace().next().unwrap_or("");
            out.push((number, target.to_owned()));
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_resolves_to_a_file_and_heading() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = read(&file);
        let dir = file.parent().unwrap_or(Path::new(""));
        for (line, target) in links(&text) {
            if target.is_empty() {
                problems.push(format!("{}:{line}: empty link target", file.display()));
                continue;
            }
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let linked = if path.is_empty() {
                file.clone()
            } else {
                normalise(&dir.join(path))
            };
            let full = Path::new(ROOT).join(&linked);
            if !full.exists() {
                problems.push(format!(
                    "{}:{line}: {target}: {} does not exist",
                    file.display(),
                    linked.display()
                ));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if linked.extension().is_none_or(|e| e != "md") {
                problems.push(format!(
                    "{}:{line}: {target}: an anchor into a file that is not Markdown",
                    file.display()
                ));
                continue;
            }
            let known = anchors(&read(&linked));
            if !known.contains(anchor) {
                problems.push(format!(
                    "{}:{line}: {target}: no heading #{anchor} in {} (it has: {})",
                    file.display(),
                    linked.display(),
                    known.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
    assert!(
        checked > 20,
        "only {checked} relative links found: is the scan broken?"
    );
}

/// `a/./b/../c` as `a/c`, without touching the file system; staying inside the repository.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                assert!(out.pop(), "{} leaves the repository", path.display());
            }
            other => out.push(other),
        }
    }
    out
}

/// The code of a Rust file before its unit tests.
fn code_before_tests(source: &str) -> &str {
    source.split("#[cfg(test)]").next().unwrap_or(source)
}

/// The upper-case string literals (`"LIKE_THIS"`) in `text`.
fn upper_literals(text: &str) -> Vec<String> {
    text.split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            let mut chars = s.chars();
            chars.next().is_some_and(|c| c.is_ascii_uppercase())
                && s.len() > 1
                && s.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_owned)
        .collect()
}

/// The upper-case literals passed to any of `methods` (`.int("…"`, or `get("…"` for
/// `get(`), up to the call's first `)`.
fn literals_in_calls(source: &str, methods: &[&str]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for method in methods {
        let mut rest = source;
        while let Some(at) = rest.find(method) {
            let after = &rest[at + method.len()..];
            let args = after.trim_start();
            if let Some(inner) = args.strip_prefix('"') {
                // A call's arguments end at its `)`; an `env = "…"` attribute is one literal.
                let end = if method.ends_with('(') {
                    args.find(')').unwrap_or(args.len())
                } else {
                    inner.find('"').map_or(args.len(), |e| e + 2)
                };
                out.extend(upper_literals(&args[..end]));
            }
            rest = after;
        }
    }
    out
}

/// The variables `Config::from_lookup` reads: the names passed to the reader's methods.
fn server_variables() -> BTreeSet<String> {
    let reader = [
        ".int(", ".bool(", ".string(", ".raw(", ".secret(", ".path(", ".pair(", ".millis(",
    ];
    literals_in_calls(code_before_tests(CONFIG_RS), &reader)
}

/// The variables `clockctl` reads: `get("…")` in its settings, `env = "…"` on its flags.
fn clockctl_variables() -> BTreeSet<String> {
    let mut vars = literals_in_calls(code_before_tests(CLI_SETTINGS_RS), &["get("]);
    vars.extend(literals_in_calls(
        code_before_tests(CLI_ARGS_RS),
        &["env ="],
    ));
    vars
}

/// The variables in the first column of the `| Variable | ... |` tables of a page.
fn documented_variables(page: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_table = false;
    for (_, line) in prose_lines(page) {
        let line = line.trim();
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        let first = line.trim_start_matches('|').split('|').next().unwrap_or("");
        if first.trim() == "Variable" {
            in_table = true;
            continue;
        }
        if in_table {
            out.extend(
                first
                    .split('`')
                    .skip(1)
                    .step_by(2)
                    .filter(|s| !upper_literals(&format!("\"{s}\"")).is_empty())
                    .map(str::to_owned),
            );
        }
    }
    out
}

fn compare(code: &BTreeSet<String>, docs: &BTreeSet<String>, page: &str, source: &str) {
    let undocumented: Vec<_> = code.difference(docs).collect();
    let unknown: Vec<_> = docs.difference(code).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "read by {source} but not in a Variable table of {page}: {undocumented:?}\n\
         in {page} but not read by {source}: {unknown:?}"
    );
}

#[test]
fn configuration_page_documents_exactly_the_variables_the_server_reads() {
    let code = server_variables();
    // The scan itself: a few variables every release has read, of each reader kind.
    for known in [
        "HTTP_ADDR",
        "REQUIRE_TLS",
        "MAX_BODY_BYTES",
        "HTTP_READ_TIMEOUT_MS",
        "API_AUTH_CREDENTIALS",
        "API_AUTH_TOKEN",
        "TLS_KEY_FILE",
        "MQTT_CA_FILE",
        "ENABLED_SENDERS",
        "MQTT_TOPIC_PREFIX",
        "CLOCK_REST_HEALTH_PATH",
        "LOG_LEVEL",
        "RUST_LOG",
    ] {
        assert!(
            code.contains(known),
            "the scan of src/config.rs missed {known}: {code:?}"
        );
    }
    let page = Path::new("docs/configuration.md");
    let docs = documented_variables(&read(page));
    compare(&code, &docs, "docs/configuration.md", "src/config.rs");
}

#[test]
fn clockctl_page_documents_exactly_the_variables_clockctl_reads() {
    let code = clockctl_variables();
    for known in [
        "CLOCK_SERVER_TOKEN",
        "CLOCKCTL_TIMEOUT_MS",
        "CLOCKCTL_BROKER_URL",
    ] {
        assert!(
            code.contains(known),
            "the scan of src/cli missed {known}: {code:?}"
        );
    }
    let docs = documented_variables(&read(Path::new("docs/clockctl.md")));
    compare(
        &code,
        &docs,
        "docs/clockctl.md",
        "src/cli/settings.rs and src/cli/args.rs",
    );
}

/// `KEY=value` lines of an env file (`docker run --env-file`): no quotes, `#` comments.
fn env_file(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY=value: {l:?}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[test]
fn example_env_file_is_accepted_by_the_server() {
    let vars = env_file(EXAMPLE_ENV);
    let read = server_variables();
    for key in vars.keys() {
        assert!(
            read.contains(key),
            "examples/clock-server.env sets {key}, which the server does not read"
        );
    }
    let config = clock_server::config::Config::from_lookup(|k| vars.get(k).cloned());
    if let Err(e) = config {
        panic!("examples/clock-server.env is refused:\n{}", e.0.join("\n"));
    }
}

/// A table row said twice on a page is a copy left behind (header rows aside: two tables
/// may have the same columns).
#[test]
fn no_page_repeats_a_table_row() {
    for file in markdown_files() {
        let text = read(&file);
        let mut rows = BTreeSet::new();
        let mut previous = "";
        for (number, line) in prose_lines(&text) {
            let is_header = !previous.starts_with('|');
            previous = line;
            if !line.starts_with('|') || is_header || line.starts_with("|--") {
                continue;
            }
            assert!(
                rows.insert(line),
                "{}:{number} repeats a row: {line}",
                file.display()
            );
        }
    }
}

/// The code of a page: each line of a fenced block, and each inline code span (`…`) of
/// the other lines, with their 1-based line numbers.
fn code_snippets(text: &str) -> Vec<(usize, String)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if fenced {
            out.push((i + 1, line.to_owned()));
        } else {
            let spans = line.split('`').skip(1).step_by(2);
            out.extend(spans.map(|span| (i + 1, span.to_owned())));
        }
    }
    out
}

/// The words of a shell command line, as far as a README uses quoting: `"…"` and `'…'`,
/// up to a comment or the end of the command (`#`, `|`, `;`, `&`).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_default().push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                word.get_or_insert_default();
            }
            (None, '#' | '|' | ';' | '&') => break,
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_default().push(c),
        }
    }
    words.extend(word);
    words
}

/// Every `clockctl` command the README gives works as typed on a fresh clone: nothing puts
/// a bare `clockctl` on the PATH, so it is `cargo run --bin clockctl -- …` (or
/// `bin/clockctl …` after `make build-clockctl`), and its arguments are accepted.
#[test]
fn every_clockctl_command_in_the_readme_runs_as_typed_on_a_fresh_clone() {
    use clock_server::cli::args::Command;
    let readme = read(Path::new("README.md"));
    let mut checked = 0;
    for (line, code) in code_snippets(&readme) {
        let mut rest = code.as_str();
        while let Some(at) = rest.find("clockctl") {
            let before = &rest[..at];
            let after = &rest[at + "clockctl".len()..];
            rest = after;
            let args = if before.ends_with("--bin ") {
                after.strip_prefix(" -- ")
            } else if before.ends_with("bin/") {
                after.strip_prefix(' ')
            } else {
                let bare = after.starts_with(' ')
                    && after[1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '-');
                assert!(
                    !bare,
                    "README.md:{line}: `clockctl{after}` is not on the PATH of a fresh clone: \
                     write `cargo run --bin clockctl --{after}`"
                );
                None
            };
            let Some(args) = args else { continue };
            let words = shell_words(args)
                .into_iter()
                .map(|w| w.replace("<commandId>", "0197a8c2-5e1f-7c3a-9b2d-4f6e8a0c1d3e"));
            let cli = clock_server::cli::Cli::try_parse_go_style(
                std::iter::once("clockctl".to_owned()).chain(words),
            )
            .unwrap_or_else(|e| panic!("README.md:{line}: {code}\n{e}"));
            match &cli.command {
                Command::Watch(watch) => clock_server::cli::watch::options(watch)
                    .map(drop)
                    .unwrap_or_else(|e| panic!("README.md:{line}: {code}\n{e}")),
                other => clock_server::cli::request::ApiRequest::from_command(other)
                    .map(drop)
                    .unwrap_or_else(|e| panic!("README.md:{line}: {code}\n{e}")),
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} clockctl commands found");
}

#[test]
fn the_scanners_work_on_small_inputs() {
    assert_eq!(
        shell_words(r#"a  --m "x y" 'z' # c"#),
        ["a", "--m", "x y", "z"]
    );
    assert_eq!(
        code_snippets("p `a b` q `c`\n```sh\nx # y\n```\n"),
        [
            (1, "a b".to_owned()),
            (1, "c".to_owned()),
            (3, "x # y".to_owned())
        ]
    );
    assert_eq!(
        slug("`clockctl watch`: a virtual clock"),
        "clockctl-watch-a-virtual-clock"
    );
    assert_eq!(slug("`Idempotency-Key`"), "idempotency-key");
    assert_eq!(
        slug("Build arguments and Makefile variables"),
        "build-arguments-and-makefile-variables"
    );
    let a = anchors("# A\n```\n# not a heading\n```\n## A\n### B c\n");
    assert_eq!(a.into_iter().collect::<Vec<_>>(), ["a", "a-1", "b-c"]);
    assert_eq!(
        links("see [x](a.md#b) and `[y](no.md)` and [z](https://e.org)\n```\n[w](c.md)\n```"),
        [(1, "a.md#b".to_owned()), (1, "https://e.org".to_owned())]
    );
    let code = "r.int(\"A_B\", 1, 2, 3); r\n  .pair(\"CC\", \"D_2\"); x.int(name); get(\"EE\")";
    assert_eq!(
        literals_in_calls(code, &[".int(", ".pair("])
            .into_iter()
            .collect::<Vec<_>>(),
        ["A_B", "CC", "D_2"]
    );
    let flag = "#[arg(long, env = \"FF_G\", default_value = \"HH\")]";
    assert_eq!(
        literals_in_calls(flag, &["env ="])
            .into_iter()
            .collect::<Vec<_>>(),
        ["FF_G"]
    );
    let page = "| Variable | Default |\n|---|---|\n| `X_Y`, `ZZ` | `ON` |\n\n| Other |\n| `NO` |\n";
    assert_eq!(
        documented_variables(page).into_iter().collect::<Vec<_>>(),
        ["X_Y", "ZZ"]
    );
}
