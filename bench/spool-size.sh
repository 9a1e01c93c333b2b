#!/usr/bin/env bash
# The spool's size on disk against the message bytes it holds (issue #11
# item 5: within 1.5x), for mail the server accepted itself, and what the
# accepting cost.
#
#   bench/spool-size.sh                                  # target/release/postern
#   POSTERN_REV=4cdf137 bench/spool-size.sh              # that commit, built
#   SIZES="1024 2200" N=20000 bench/spool-size.sh
#
# For each body SIZE (smtp-source's -l), a fresh Postern in hold mode
# takes N messages from 50 sessions; then it is stopped cleanly, and the
# row says: the bytes of every file under data_dir/spool (WAL and segment
# files included) against SUM(size) of the stored messages (the message as
# stored: the body plus the Received: line this server added), the server's
# CPU time (user + system, clock ticks) and the bytes it wrote (/proc/PID/io)
# while accepting, and the seconds the N messages took.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-"600 1024 1500 1900 2200 3000 4000 6000 7000"}
N=${N:-10000}
SMTP_SOURCE=${SMTP_SOURCE:-/usr/sbin/smtp-source}
WORK=${BENCH_WORKDIR:-/var/tmp}/postern-spool-size.$$

[ -x "$SMTP_SOURCE" ] || {
  echo "spool-size.sh: $SMTP_SOURCE missing: run /work/shared/bench/peers-setup.sh install" >&2
  exit 1
}
. bench/binary.sh
. bench/postern.sh
. bench/serve.sh

server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$WORK"' EXIT
printf '%-6s %10s %14s %14s %7s %9s %12s %8s\n' \
  size messages "spool bytes" "message bytes" ratio "cpu ticks" "written MiB" seconds
for size in $SIZES; do
  dir=$WORK/$size
  mkdir -p "$dir"
  { postern_toml "$dir" bench.test; printf '[delivery]\nhold = true\n'; } > "$dir/postern.toml"
  start_postern "$dir/postern.toml" "$dir"
  read -r ticks_before < <(awk '{print $14 + $15}' "/proc/$server/stat")
  written_before=$(awk '/^write_bytes/ {print $2}' "/proc/$server/io")
  t0=$(date +%s.%N)
  "$SMTP_SOURCE" -s 50 -m "$N" -l "$size" -f a@example.com -t b@example.net "127.0.0.1:$port" \
    > "$dir/source.out" 2>&1 || { cat "$dir/source.out" >&2; exit 1; }
  t1=$(date +%s.%N)
  ticks=$(($(awk '{print $14 + $15}' "/proc/$server/stat") - ticks_before))
  written=$(($(awk '/^write_bytes/ {print $2}' "/proc/$server/io") - written_before))
  kill "$server"
  wait "$server" 2>/dev/null || true
  server=""
  read -r count bytes < <(sqlite3 -separator ' ' "$dir/data/spool/queue.sqlite" \
    "SELECT COUNT(*), SUM(size) FROM message")
  spool=$(find "$dir/data/spool" -type f -printf '%s\n' | awk '{s += $1} END {print s}')
  awk -v size="$size" -v n="$count" -v s="$spool" -v b="$bytes" -v c="$ticks" \
    -v w="$written" -v t0="$t0" -v t1="$t1" 'BEGIN {
      printf "%-6s %10d %14d %14d %6.2fx %9d %12.1f %8.2f\n",
        size, n, s, b, s / b, c, w / 1048576, t1 - t0 }'
  [ "$count" = "$N" ] || echo "spool-size.sh: $count of $N messages in the spool" >&2
  rm -rf "$dir"
done
echo "binary: $bin; host: $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC')"
