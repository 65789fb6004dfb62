//! Last-Event-ID as a client sends it: parsed ids print back to themselves; long ones are refused.
#![no_main]

use herald_core::EventId;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match EventId::parse(text) {
        Some(id) => {
            assert!(text.len() <= 256);
            assert_eq!(EventId::parse(&id.to_string()), Some(id), "{text:?}");
        }
        None => {
            if let Some((epoch, seq)) = text.split_once('-') {
                let canonical = u64::from_str_radix(epoch, 16).is_ok() && !seq.is_empty()
                    && seq.bytes().all(|b| b.is_ascii_digit()) && seq.parse::<u64>().is_ok();
                assert!(!canonical || text.len() > 256 || epoch.starts_with('+'), "{text:?} refused");
            }
        }
    }
});
