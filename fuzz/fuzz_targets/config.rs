//! Any bytes as gateway.yaml: a configuration or problems with positions, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // YAML breaks lines at \n, \r\n and a lone \r: count both kinds (an upper bound).
    let lines = text.bytes().filter(|&b| b == b'\n' || b == b'\r').count() + 1;
    let env = |name: &str| (name == "SET").then(|| "value".to_string());
    if let Err(problems) = herald_config::load("gateway.yaml", &text, &env) {
        assert!(!problems.0.is_empty(), "an error names at least one problem");
        for p in &problems.0 {
            assert!(p.line >= 1 && p.col >= 1, "{p}");
            // A problem points into the file (or just past its last line).
            assert!(p.line <= lines + 1, "{p} in a file of {lines} lines");
            assert!(p.to_string().starts_with("gateway.yaml:"), "{p}");
        }
    }
});
