#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookbridge_fuzz::chat_markup(data));
