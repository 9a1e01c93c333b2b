//! cargo-fuzz target; the call and its invariants are in checks/sasl.rs, which
//! tests/fuzz_regressions.rs also runs on every committed input.
#![no_main]

#[path = "../checks/sasl.rs"]
mod sasl;

libfuzzer_sys::fuzz_target!(|input: &[u8]| sasl::check(input));
