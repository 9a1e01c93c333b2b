# Sourced by the bench scripts, from the repository's root: sets $bin to the
# postern binary to measure. POSTERN_REV: that revision, exported with
# `git archive` and built in CARGO_TARGET_DIR (default /work/bench-target),
# then copied out so a later build there cannot change it under the run.
# Otherwise POSTERN_BIN, else target/release/postern (built if missing).
if [ -n "${POSTERN_REV:-}" ]; then
  src=$(mktemp -d)
  # -m: the files get the time of extraction, not of the commit; otherwise
  # cargo finds a build of another revision made since then newer than
  # them and does not build this one (an A/B run measured one binary twice).
  git archive "$POSTERN_REV" | tar -x -m -C "$src"
  target=${CARGO_TARGET_DIR:-/work/bench-target}
  (cd "$src" && CARGO_TARGET_DIR=$target cargo build --release --quiet)
  bin="$target/release/postern"
  cp "$bin" "$src/postern" && bin="$src/postern"
elif [ -n "${POSTERN_BIN:-}" ]; then
  bin=$POSTERN_BIN
else
  [ -x target/release/postern ] || cargo build --release --quiet
  bin=$PWD/target/release/postern
fi
