//! An upstream's answer head: passed on only as a well-formed head with one framing.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    herald_proxy::fuzz::answer_head(data);
});
