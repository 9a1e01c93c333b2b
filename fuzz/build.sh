#!/usr/bin/env bash
# Builds every cargo-fuzz target; with `run [SECONDS]`, then fuzzes each target
# in turn for SECONDS (default 60) and fails if any of them found a crash.
#   fuzz/build.sh            what CI runs: the targets must build
#   fuzz/build.sh run 600    the nightly run, 10 minutes a target
set -euo pipefail
cd "$(dirname "$0")"

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
