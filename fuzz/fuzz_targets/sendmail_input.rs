//! cargo-fuzz target; the call and its invariants are in checks/sendmail_input.rs,
//! which tests/fuzz_regressions.rs also runs on every committed input.
#![no_main]

#[path = "../checks/sendmail_input.rs"]
mod sendmail_input;

libfuzzer_sys::fuzz_target!(|input: &[u8]| sendmail_input::check(input));
