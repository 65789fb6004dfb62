//! herald's TLS server connection against any client bytes: no panic, bounded buffers, data intact.
#![no_main]

use std::sync::LazyLock;

use herald_http::fuzz::TlsFuzz;

/// Built once: the runtime and the TLS configurations (the tests' certificate and key).
static FUZZ: LazyLock<TlsFuzz> = LazyLock::new(|| {
    TlsFuzz::new(include_bytes!("../../tests/fixtures/tls-a.pem"), include_bytes!("../../tests/fixtures/tls-a.key"))
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    FUZZ.run(data);
});
