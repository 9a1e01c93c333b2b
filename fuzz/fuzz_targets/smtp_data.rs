//! cargo-fuzz target; the call and its invariants are in checks/smtp_data.rs, which
//! tests/fuzz_regressions.rs also runs on every committed input.
#![no_main]

#[path = "../checks/smtp_data.rs"]
mod smtp_data;

libfuzzer_sys::fuzz_target!(|input: &[u8]| smtp_data::check(input));
