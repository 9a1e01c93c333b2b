#!/usr/bin/env bash
# How long `postern queue list --summary` takes with a large queue (issue #10:
# under a second with 1,000,000 messages queued), and `queue list` itself,
# paged (issue #11 item 5): the first 100, a small domain, held messages, and
# the whole queue, each with its peak RSS; and the spool's size on disk
# against the message bytes it holds.
#
#   bench/queue-summary.sh                        # target/release/postern, built if missing
#   POSTERN_REV=HEAD bench/queue-summary.sh       # git-archive that commit and build it
#   MESSAGES=1000000 RUNS=5 bench/queue-summary.sh
#
# The spool is made by the binary itself (its migrations), then filled in
# one SQLite transaction with MESSAGES messages of 1 KiB (one in three has a
# second recipient; 1,000 destination domains, the first ones far more common;
# a third of the recipients tried before, one message in a hundred held),
# instead of through SMTP, which would take hours. Each command then runs RUNS
# times; the script prints each time and the median (peak RSS: the largest).
# domain999.example is a small destination: about one message in 3,000.
set -euo pipefail
cd "$(dirname "$0")/.."

MESSAGES=${MESSAGES:-1000000}
RUNS=${RUNS:-5}
WORK=${BENCH_WORKDIR:-/var/tmp}/postern-queue-summary.$$

. bench/binary.sh

mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
cat > "$WORK/postern.toml" <<EOF
hostname = "bench.test"
data_dir = "$WORK/data"
EOF
"$bin" queue list --config "$WORK/postern.toml" > /dev/null

fill_start=$(date +%s.%N)
python3 bench/fill-spool.py "$WORK/data/spool/queue.sqlite" "$MESSAGES"
fill_end=$(date +%s.%N)
printf 'filled the spool with %d messages in %.0f s (%s)\n' "$MESSAGES" \
  "$(awk "BEGIN {print $fill_end - $fill_start}")" "$(du -sh "$WORK/data/spool" | cut -f1)"

# Runs "$@" RUNS times with stdout to $out; prints the median wall time and
# the largest peak RSS.
timed() {
  local label=$1 out=$2; shift 2
  local times=() rss=0 start end t m
  for run in $(seq "$RUNS"); do
    start=$(date +%s.%N)
    /usr/bin/time -f %M -o "$WORK/rss" "$@" --config "$WORK/postern.toml" > "$out"
    end=$(date +%s.%N)
    t=$(awk "BEGIN {print $end - $start}")
    m=$(tail -n 1 "$WORK/rss")
    times+=("$t")
    if (( m > rss )); then rss=$m; fi
    printf '  run %d: %.3f s, %d KiB\n' "$run" "$t" "$m"
  done
  local median
  median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  printf '%-50s %8.3f s %8.1f MiB  (%d messages, median of %d runs)\n' \
    "$label" "$median" "$(awk "BEGIN {print $rss / 1024}")" "$MESSAGES" "$RUNS" >> "$WORK/results"
}

: > "$WORK/results"
timed "postern queue list --summary" "$WORK/summary.txt" "$bin" queue list --summary
head -n 12 "$WORK/summary.txt"
timed "postern queue list --limit 100" "$WORK/limit.txt" "$bin" queue list --limit 100
timed "postern queue list --to-domain domain999.example" "$WORK/domain.txt" \
  "$bin" queue list --to-domain domain999.example
timed "postern queue list --state held" "$WORK/held.txt" "$bin" queue list --state held
timed "postern queue list --json --limit 1000" /dev/null "$bin" queue list --json --limit 1000
timed "postern queue list (all)" /dev/null "$bin" queue list
tail -n 1 "$WORK/limit.txt" "$WORK/domain.txt" "$WORK/held.txt"
cat "$WORK/results"

# Disk against message bytes (issue #11 item 5: within 1.5x). The fill writes
# rows as the server writes bodies under 8 KiB (in the row); the ratio counts
# every file under spool/ (database, WAL, segments).
bytes=$(python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT SUM(size) FROM message").fetchone()[0])' \
  "$WORK/data/spool/queue.sqlite")
disk=$(du -sb "$WORK/data/spool" | cut -f1)
printf 'spool on disk: %d bytes for %d message bytes: %.2fx\n' "$disk" "$bytes" \
  "$(awk "BEGIN {print $disk / $bytes}")"
