//! cargo-fuzz target; the call and its invariants are in checks/xtext.rs, which
//! tests/fuzz_regressions.rs also runs on every committed input.
#![no_main]

#[path = "../checks/xtext.rs"]
mod xtext;

libfuzzer_sys::fuzz_target!(|input: &[u8]| xtext::check(input));
