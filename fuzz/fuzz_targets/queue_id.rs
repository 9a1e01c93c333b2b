//! cargo-fuzz target; the call and its invariants are in checks/queue_id.rs, which
//! tests/fuzz_regressions.rs also runs on every committed input.
#![no_main]

#[path = "../checks/queue_id.rs"]
mod queue_id;

libfuzzer_sys::fuzz_target!(|input: &[u8]| queue_id::check(input));
