//! One description of the configuration's keys: the reader itself. While it reads a
//! configuration with every section, each key it asks for is recorded; the test below checks
//! that docs/configuration.md's key tables list exactly those keys and that gateway.yaml (the
//! example `herald demo` runs) reads without a problem. A key added to the reader, the docs or
//! the example alone fails it.

use std::cell::RefCell;
use std::collections::BTreeSet;

thread_local! {
    static ASKED: RefCell<BTreeSet<String>> = const { RefCell::new(BTreeSet::new()) };
}

/// Records that the reader asked for `path` (`routes[2].poll.interval` as `routes[].poll.interval`).
pub(super) fn asked(path: &str) {
    let mut normalized = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                normalized.push_str("[]");
            }
            ']' => in_index = false,
            _ if in_index => {}
            _ => normalized.push(c),
        }
    }
    ASKED.with(|asked| asked.borrow_mut().insert(normalized));
}

/// A configuration in which every map the reader descends into is present.
const EVERY_SECTION: &str = "\
server:
  tls: {cert: cert.pem, key: key.pem}
limits: {}
upstream:
  url: 'http://127.0.0.1:9'
  auth: {kind: oauth2_client_credentials, token_url: 'http://127.0.0.1:9/token', client_id: a, client_secret: b}
routes:
  - name: tasks
    path: /tasks
    poll: {interval: 5s, pages: {next: /next}, delta: {param: since, from: max:/rev, deleted: /gone, full_every: 30m}}
    events: {format: collection, collection: {items: ''}}
sse: {}
log: {}
storage: {kind: memory}
webhooks:
  subscriptions:
    - {id: a, url: 'https://example.com/hook', path: /tasks}
";

/// The keys docs/configuration.md's tables list, with their section's path in front.
fn documented(docs: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut section = None;
    for line in docs.lines() {
        if let Some(heading) = line.strip_prefix("### `") {
            let name = heading.split('`').next().unwrap_or("");
            section = Some(if name == "routes" { "routes[]".to_string() } else { name.to_string() });
        } else if line.starts_with("## ") {
            section = None;
        } else if let (Some(section), Some(row)) = (&section, line.strip_prefix("| `")) {
            let first = format!("`{}", row.split(" |").next().unwrap_or(""));
            for key in first.split(", ") {
                keys.insert(format!("{section}.{}", key.trim_matches('`')));
            }
        }
    }
    keys
}

#[test]
fn the_docs_list_every_key_the_reader_reads_and_no_other() {
    ASKED.with(|asked| asked.borrow_mut().clear());
    // Whether it loads does not matter here (the certificate files do not exist): what it asked for.
    let _ = crate::load("every.yaml", EVERY_SECTION, &|_| None);
    let asked = ASKED.with(|asked| asked.borrow().clone());
    // The leaves: a map's key (`server`, `routes[].poll`) stands for the keys under it.
    let within = |map: &String, key: &String| {
        key.len() > map.len() && key.starts_with(map.as_str()) && matches!(key.as_bytes()[map.len()], b'.' | b'[')
    };
    let read: BTreeSet<String> =
        asked.iter().filter(|map| !asked.iter().any(|key| within(map, key))).cloned().collect();
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md")).unwrap();
    let documented = documented(&docs);
    let undocumented: Vec<_> = read.difference(&documented).collect();
    let unread: Vec<_> = documented.difference(&asked).collect();
    assert!(undocumented.is_empty(), "read but not in docs/configuration.md's tables: {undocumented:?}");
    assert!(unread.is_empty(), "in docs/configuration.md's tables but never read: {unread:?}");
    assert!(read.len() > 60, "only {} keys recorded", read.len());
}

#[test]
fn the_example_configuration_reads_without_a_problem() {
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../gateway.yaml")).unwrap();
    if let Err(e) = crate::load("gateway.yaml", &example, &|_| None) {
        panic!("{e}");
    }
}
