//! cargo-fuzz target; the call and its invariants are in checks/message.rs, which
//! tests/fuzz_regressions.rs also runs on every committed input.
#![no_main]

#[path = "../checks/message.rs"]
mod message;

libfuzzer_sys::fuzz_target!(|input: &[u8]| message::check(input));
