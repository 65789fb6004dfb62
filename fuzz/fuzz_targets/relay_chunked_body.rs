//! A chunked body: framing followed the same way whole or in pieces, never past its input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    herald_proxy::fuzz::chunked_body(data);
});
