//! `parse` never panics (nor hangs) on arbitrary text or on YAML-ish input built from fragments.

use proptest::prelude::*;

const FRAGMENTS: &[&str] = &[
    "jobs:",
    "shared:",
    "  main:",
    "  a:",
    "    image: node",
    "    steps:",
    "      - build: make",
    "      - *x",
    "      - &x {i: c}",
    "    requires: [~commit, a]",
    "    requires: ~pr:/[/",
    "  <<: *x",
    "<<: *x",
    "&x",
    "*x",
    "- ",
    "? ",
    ": ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "'",
    "\"",
    "|",
    ">-",
    "\t",
    "#c",
    "    environment: {A: 1.0}",
    "    services: [postgres:16, {image: r, alias: x}]",
    "    docker: dind",
    "    dind: {tls: false}",
    "    annotations: {screwdriver.cd/cpu: HIGH}",
    "---",
    "...",
    "!!str",
    "!!binary",
    "!tag",
    "~",
    "null",
    "0x",
    "1e999",
    "-.inf",
    ".nan",
    "%YAML 1.2",
    "\u{feff}",
    "é",
    "      - teardown-x: y",
    "parameters: {P: [a, b]}",
    "cache: {}",
    "template: x",
    "\\",
    "\r",
];

fn no_panic(src: &str) {
    let _ = berth_pipeline::parse(src, "fuzz.yaml");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings(src in ".{0,400}") {
        no_panic(&src);
    }

    #[test]
    fn yaml_ish_fragments(parts in proptest::collection::vec((0..FRAGMENTS.len(), 0..6usize, prop::bool::ANY), 0..40)) {
        let mut src = String::new();
        for (i, indent, newline) in parts {
            src.push_str(&" ".repeat(indent));
            src.push_str(FRAGMENTS[i]);
            src.push(if newline { '\n' } else { ' ' });
        }
        no_panic(&src);
    }
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    for open in ["[", "{a: ", "- "] {
        let src = format!("jobs: {}", open.repeat(5000));
        no_panic(&src);
    }
    let mut block = String::from("jobs:\n");
    for depth in 1..200 {
        block.push_str(&format!("{}k{depth}:\n", " ".repeat(depth)));
    }
    no_panic(&block);
    let seqs = format!(
        "jobs:\n{}",
        (0..200)
            .map(|d| format!("{}- \n", "  ".repeat(d)))
            .collect::<String>()
    );
    no_panic(&seqs);
}

#[test]
fn alias_bombs_are_refused() {
    let mut src = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let prev = format!("*a{}", i - 1);
        src.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
    }
    src.push_str("jobs: {main: {image: x, steps: *a11}}\n");
    let start = std::time::Instant::now();
    assert!(berth_pipeline::parse(&src, "bomb.yaml").is_err());
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
}

/// Inputs saved by the cargo-fuzz target `pipeline_parse` (`fuzz/regressions/pipeline_parse/`,
/// plus its seeds) are replayed here, so every crash found becomes a regression test.
#[test]
fn fuzz_seeds_and_regressions_do_not_panic() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut n = 0;
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join("pipeline_parse")) else {
            continue;
        };
        for e in entries.flatten() {
            let bytes = std::fs::read(e.path()).unwrap();
            no_panic(&String::from_utf8_lossy(&bytes));
            n += 1;
        }
    }
    assert!(n > 0, "no fuzz seeds found under {}", root.display());
}
