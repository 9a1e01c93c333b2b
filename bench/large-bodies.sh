#!/usr/bin/env bash
# Peak memory of a server receiving large messages slowly from many clients at
# once (issue #9: memory per session must not grow with the message size).
#
#   bench/large-bodies.sh                         # target/release/postern, built if missing
#   POSTERN_REV=677ce9e bench/large-bodies.sh     # git-archive that commit and build it
#   CLIENTS=200 SIZE_MIB=20 SEND_SECONDS=60 bench/large-bodies.sh
#
# Every client opens a session, sends MAIL, RCPT and DATA, then its body in
# 64 KiB pieces paced so that all of them are in the middle of their bodies at
# the same time for SEND_SECONDS, ends with the dot and waits for the 250.
# The server keeps the mail ([delivery] hold). Its PSS is sampled every 0.25 s;
# the script prints the peak, the peak per client, and how many got a 250.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-200}
SIZE_MIB=${SIZE_MIB:-20}
SEND_SECONDS=${SEND_SECONDS:-60}
WORK=${BENCH_WORKDIR:-/var/tmp}/postern-large-bodies.$$

. bench/binary.sh
. bench/serve.sh

mkdir -p "$WORK"
trap 'kill $server 2>/dev/null || true; rm -rf "$WORK"' EXIT
cat > "$WORK/postern.toml" <<EOF
hostname = "bench.test"
data_dir = "$WORK/data"
trusted_networks = ["127.0.0.1/32"]
[[listener]]
addr = "127.0.0.1:0"
role = "mta"
[limits]
max_connections_per_ip = 10000
max_connections = 10000
[delivery]
hold = true
EOF
start_postern "$WORK/postern.toml" "$WORK"

# Peak PSS of the server, in KiB, sampled until the clients are done.
(
  peak=0
  while kill -0 "$server" 2>/dev/null && [ ! -e "$WORK/done" ]; do
    pss=$(awk '/^Pss:/ {print $2}' "/proc/$server/smaps_rollup" 2>/dev/null || echo 0)
    [ "${pss:-0}" -gt "$peak" ] && peak=$pss && echo "$peak" > "$WORK/peak"
    sleep 0.25
  done
) &
sampler=$!

start=$(date +%s.%N)
python3 - "$port" "$CLIENTS" "$SIZE_MIB" "$SEND_SECONDS" > "$WORK/clients.out" <<'PY'
import asyncio, sys, time
port, clients, size_mib, seconds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
line = b"x" * 78 + b"\r\n"
piece = line * (65536 // len(line))
pieces = size_mib * (1 << 20) // len(piece)
async def reply(r):
    while True:
        l = await r.readline()
        if not l or l[3:4] != b"-":
            return l
async def client(n):
    r, w = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    await reply(r)
    for cmd in (b"EHLO bench.test", b"MAIL FROM:<bench@remote.example>", b"RCPT TO:<someone@remote.example>", b"DATA"):
        w.write(cmd + b"\r\n"); await w.drain(); await reply(r)
    w.write(b"Subject: large %d\r\n\r\n" % n)
    t0 = time.monotonic()
    for i in range(pieces):
        w.write(piece); await w.drain()
        ahead = t0 + seconds * (i + 1) / pieces - time.monotonic()
        if ahead > 0:
            await asyncio.sleep(ahead)
    w.write(b".\r\n"); await w.drain()
    done = await reply(r)
    w.close()
    return done.startswith(b"250")
async def main():
    results = await asyncio.gather(*(client(n) for n in range(clients)), return_exceptions=True)
    print(sum(1 for x in results if x is True))
asyncio.run(main())
PY
end=$(date +%s.%N)
touch "$WORK/done"
wait "$sampler" 2>/dev/null || true
peak=$(cat "$WORK/peak" 2>/dev/null || echo 0)
accepted=$(cat "$WORK/clients.out")
awk -v peak="$peak" -v clients="$CLIENTS" -v size="$SIZE_MIB" -v acc="$accepted" -v s="$start" -v e="$end" -v rev="${POSTERN_REV:-$bin}" 'BEGIN {
  printf "postern %s: %d clients x %d MiB, %d accepted in %.0f s; peak PSS %.1f MiB (%.0f KiB per client)\n",
    rev, clients, size, acc, e - s, peak / 1024, peak / clients
}'
