//! A client's request head: relayed only as a well-formed head with one framing.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    herald_proxy::fuzz::request_head(data);
});
