#!/usr/bin/env bash
# Builds every cargo-fuzz target; with `run [SECONDS]`, then fuzzes each target
# in turn for SECONDS (default 60) and fails if any of them found a crash.
#   fuzz/build.sh            every target, with the sanitizer (8-10 minutes cold)
#   fuzz/build.sh check      what CI runs: the targets compile (under a minute)
#   fuzz/build.sh run 600    the nightly run, 10 minutes a target
set -euo pipefail
cd "$(dirname "$0")"

# CI's check type-checks the targets against the library in the main
# target directory, whose dependencies the tests have just compiled: the
# sanitizer build compiles them all again in release (10 minutes and 3.7
# GiB on 2 cores, which ran a CI machine out of disk), and the targets'
# logic (checks/*.rs) is compiled and run by `cargo test` already
# (tests/fuzz_regressions.rs). The nightly run builds them whole.
if [ "${1:-}" = check ]; then
  CARGO_TARGET_DIR=../target exec cargo check --bins
fi

# cargo-fuzz needs nightly -Z flags (sanitizers, coverage); RUSTC_BOOTSTRAP=1
# lets the stable toolchain accept them.
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz

cargo fuzz build

if [ "${1:-}" = run ]; then
  seconds="${2:-60}"
  status=0
  for target in $(cargo fuzz list); do
    echo "== $target: ${seconds}s"
    cargo fuzz run "$target" -- -max_total_time="$seconds" || status=1
  done
  exit "$status"
fi
