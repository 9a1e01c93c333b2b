//! cargo-fuzz target; the call and its invariants are in checks/address.rs, which
//! tests/fuzz_regressions.rs also runs on every committed input.
#![no_main]

#[path = "../checks/address.rs"]
mod address;

libfuzzer_sys::fuzz_target!(|input: &[u8]| address::check(input));
