#!/usr/bin/env bash
# How fast the dashboard's pages answer with a large queue (issue #15: "the
# pages stay fast with 1,000,000 messages queued"): a spool filled as for
# queue-summary.sh (bench/fill-spool.py, every recipient due a day from now,
# so the server delivers nothing while it is measured), `postern serve` with
# the dashboard on, an administrator signed in with curl, and each page
# fetched RUNS times: the median time and the server's resident memory after.
# The store holds ACCOUNTS accounts (default 10,000), each with a message in
# every hour of the 8 days of sending history kept, and every tenth held, for
# the accounts view.
#
#   bench/dashboard.sh                          # target/release/postern, built if missing
#   MESSAGES=1000000 RUNS=5 bench/dashboard.sh
#   POSTERN_REV=HEAD bench/dashboard.sh
set -euo pipefail
cd "$(dirname "$0")/.."

MESSAGES=${MESSAGES:-1000000}
ACCOUNTS=${ACCOUNTS:-10000}
RUNS=${RUNS:-5}
WORK=${BENCH_WORKDIR:-/var/tmp}/postern-dashboard.$$

. bench/binary.sh

mkdir -p "$WORK"
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$WORK"' EXIT
cat > "$WORK/postern.toml" <<TOML
hostname = "bench.test"
data_dir = "$WORK/data"
[[listener]]
addr = "127.0.0.1:0"
role = "mta"
[http]
addr = "127.0.0.1:0"
dashboard = true
TOML
"$bin" queue list --config "$WORK/postern.toml" > /dev/null
start=$(date +%s.%N)
python3 bench/fill-spool.py "$WORK/data/spool/queue.sqlite" "$MESSAGES" 86400
printf 'filled the spool with %d messages in %.0f s (%s)\n' "$MESSAGES" \
  "$(awk "BEGIN {print $(date +%s.%N) - $start}")" "$(du -sh "$WORK/data/spool" | cut -f1)"
echo 'bench passphrase' | "$bin" admin add bench --password-stdin --config "$WORK/postern.toml"
python3 - "$WORK/data/store.sqlite" "$ACCOUNTS" <<'PY'
import sqlite3, sys, time
db, n = sys.argv[1], int(sys.argv[2])
now = int(time.time())
c = sqlite3.connect(db)
c.executescript(f"""
BEGIN;
INSERT INTO domain (name, created) VALUES ('example.com', {now});
WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < {n} - 1)
INSERT INTO account (address, domain, password_hash, created, held_since, held_reason)
SELECT 'user' || i || '@example.com', 'example.com', 'x', {now},
       CASE WHEN i % 10 = 0 THEN {now} END, CASE WHEN i % 10 = 0 THEN 'burst' END FROM k;
WITH RECURSIVE h(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM h WHERE j < 191)
INSERT INTO sending_hour (address, hour, messages)
SELECT address, {now} / 3600 - j, 1 + (rowid + j) % 7 FROM account, h;
COMMIT;
""")
c.close()
PY

start=$(date +%s.%N)
"$bin" serve --config "$WORK/postern.toml" 2>"$WORK/server.log" &
server=$!
for _ in $(seq 300); do [ -s "$WORK/data/run/http.json" ] && break; sleep 0.1; done
[ -s "$WORK/data/run/http.json" ] || { tail -5 "$WORK/server.log"; exit 1; }
printf 'listening after %.2f s\n' "$(awk "BEGIN {print $(date +%s.%N) - $start}")"
http=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0])' "$WORK/data/run/http.json")
base="http://$http/dashboard"
jar=$WORK/cookies
curl -sf -o /dev/null -c "$jar" --data-urlencode name=bench \
  --data-urlencode 'password=bench passphrase' "$base/login"

: > "$WORK/results"
for page in "" /queue /ports /accounts; do
  times=()
  for _ in $(seq "$RUNS"); do
    t=$(curl -sf -b "$jar" -o "$WORK/page.html" -w '%{time_total}' "$base$page")
    times+=("$t")
  done
  median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  grep -q 'Sign out' "$WORK/page.html" || { echo "not signed in: $page"; exit 1; }
  printf '%-22s %8.3f s  (%s; %d messages, %d accounts, median of %d)\n' "/dashboard$page" "$median" \
    "$(printf '%s ' "${times[@]}")" "$MESSAGES" "$ACCOUNTS" "$RUNS" >> "$WORK/results"
done
rss=$(awk '/^Rss:/ {print $2}' "/proc/$server/smaps_rollup")
cat "$WORK/results"
printf 'server resident memory after: %.1f MiB\n' "$(awk "BEGIN {print $rss / 1024}")"
