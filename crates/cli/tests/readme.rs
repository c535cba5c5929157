//! Every `reveal` command the README and the tour show exists, with every flag it uses: each
//! subcommand's `--help` is asked for, and each `--flag` of the line must be in it.

mod common;

use common::{ok, reveal_in};

/// The command lines of a Markdown file: lines of its code blocks, and commands in backticks,
/// that start with `reveal ` (or `cargo run --release -- `, the README's set-up line).
fn commands(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let mut candidates: Vec<&str> = Vec::new();
        if in_code {
            candidates.push(line.trim());
        } else {
            candidates.extend(line.split('`').skip(1).step_by(2));
        }
        for c in candidates {
            let c = c.split('#').next().unwrap().trim();
            let c = c
                .strip_prefix("cargo run --release -- ")
                .map_or(c.to_string(), |rest| format!("reveal {rest}"));
            if c.starts_with("reveal ") {
                out.push(c);
            }
        }
    }
    out
}

fn check(file: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let lines = commands(&text);
    assert!(
        lines.len() >= 5,
        "{file}: only {} commands found",
        lines.len()
    );
    let dir = tempfile::tempdir().unwrap();
    for line in lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        let sub = words[1];
        if sub.starts_with('-') {
            // A top-level flag (`reveal --help`): it must run as shown.
            ok(reveal_in(dir.path()).args(&words[1..]));
            continue;
        }
        let help = ok(reveal_in(dir.path()).args([sub, "--help"]));
        let help = String::from_utf8(help.stdout).unwrap();
        for flag in words.iter().filter(|w| w.starts_with("--")) {
            let flag = flag.split('=').next().unwrap();
            assert!(
                help.contains(&format!("{flag} "))
                    || help.contains(&format!("{flag}\n"))
                    || help.contains(&format!("{flag} <")),
                "{file}: `{line}`: reveal {sub} has no {flag}"
            );
        }
    }
}

#[test]
fn the_readme_commands_exist() {
    check("README.md");
}

#[test]
fn the_tour_commands_exist() {
    check("docs/tour.md");
}
