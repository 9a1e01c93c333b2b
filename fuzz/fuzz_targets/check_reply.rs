//! cargo-fuzz target; the call and its invariants are in checks/check_reply.rs,
//! which tests/fuzz_regressions.rs also runs on every committed input.
#![no_main]

#[path = "../checks/check_reply.rs"]
mod check_reply;

libfuzzer_sys::fuzz_target!(|input: &[u8]| check_reply::check(input));
