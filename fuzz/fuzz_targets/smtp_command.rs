//! cargo-fuzz target; the call and its invariants are in checks/smtp_command.rs, which
//! tests/fuzz_regressions.rs also runs on every committed input.
#![no_main]

#[path = "../checks/smtp_command.rs"]
mod smtp_command;

libfuzzer_sys::fuzz_target!(|input: &[u8]| smtp_command::check(input));
