#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stampede::fuzzing::log_records(data));
