#!/usr/bin/env bash
# Many destinations (issue #11 item 2): mail to DOMAINS recipient domains, each
# with its own MX on its own 127.0.x.y address, served by a real DNS server
# (dnsmasq), next to Postfix delivering the same mail in the same run.
#
#   bench/destinations.sh                      # target/release/postern, built if missing
#   POSTERN_REV=HEAD bench/destinations.sh     # git-archive that commit and build it
#   SCENARIOS="mx dead" SERVERS=postern bench/destinations.sh
#
# Everything runs inside a network namespace the script creates and deletes:
# dnsmasq on 127.0.0.1:53 (the namespace's resolv.conf points there, for
# Postfix), one smtp-sink on port 25 of every 127.0.0.0/8 address (it counts
# what it receives), the nftables rules of the dead scenario, and both servers.
# Nothing on the host changes except /etc/netns/NAME/resolv.conf, which `ip
# netns exec` binds over /etc/resolv.conf and which the script removes.
#
# Load: PER_DOMAIN messages of 1 KiB to each of DOMAINS domains (dN.example,
# MX mx.dN.example on 127.0.x.y, TTL 300), one recipient each, one SMTP session
# per message, CONC sessions at once, each sending one domain's messages in a
# row, then the next domain's. smtp-source takes one recipient per run, and
# starting a run per domain cost more CPU than the servers; the sender is
# therefore a small asyncio client (LOAD_PROCS processes; MAIL, RCPT and DATA
# pipelined, RFC 2920), which counts the 250s it gets.
# Scenarios, each with a fresh server:
#   relay  the same load, every message through one relay (the sink on
#          127.0.1.1:25): the single-relay rate, the reference;
#   mx     each message to its domain's MX;
#   dead   as mx, but every DEAD_EVERY-th domain's MX drops SYNs to port 25
#          (connect timeouts): the rate of the live domains' mail.
# The clock runs from the first session until the sink has every live message.
# Then the server stops and the run is counted: the sink's messages plus those
# left in the queue must equal the messages accepted, and the sink must hold
# exactly the live ones (delivered once each; the dead domains' mail stays queued).
set -euo pipefail
cd "$(dirname "$0")/.."

DOMAINS=${DOMAINS:-2000}
PER_DOMAIN=${PER_DOMAIN:-10}
DEAD_EVERY=${DEAD_EVERY:-10}
CONC=${CONC:-50}
LOAD_PROCS=${LOAD_PROCS:-2}
SCENARIOS=${SCENARIOS:-"relay mx dead"}
SERVERS=${SERVERS:-"postfix postern"}
PF_PORT=${PF_PORT:-10125}
WORK=${BENCH_WORKDIR:-/var/tmp}/postern-dest.$$
SMTP_SINK=${SMTP_SINK:-/usr/sbin/smtp-sink}
TIMEOUT=${TIMEOUT:-900}
NS=postern-dest-$$
RELAY_IP=127.0.1.1

. bench/binary.sh
. bench/postern.sh
. bench/postfix-instance.sh

[ "$(id -u)" = 0 ] || { echo "destinations.sh: run as root (network namespace, Postfix)" >&2; exit 1; }
command -v dnsmasq > /dev/null || apt-get install -y dnsmasq-base > /dev/null
command -v postfix > /dev/null && [ -x "$SMTP_SINK" ] || {
  /work/shared/bench/peers-setup.sh install > /dev/null 2>&1 || apt-get install -y postfix > /dev/null
}
# The sink holds a connection per delivery in flight or kept for reuse, on
# every MX address at once (-m below); background processes are started with
# `ip netns exec` itself, not a function, so that $! is their PID.
ulimit -n "$(ulimit -Hn)"

mkdir -p "$WORK"
PIDS="" PF_CONF="" POSTERN_PID="" SAMPLER_PID=""
in_ns() { ip netns exec "$NS" "$@"; }
cleanup() {
  [ -n "$SAMPLER_PID" ] && kill "$SAMPLER_PID" 2> /dev/null || true
  [ -n "$POSTERN_PID" ] && kill "$POSTERN_PID" 2> /dev/null || true
  [ -n "$PF_CONF" ] && in_ns postfix -c "$PF_CONF" stop > /dev/null 2>&1 || true
  for p in $PIDS; do kill "$p" 2> /dev/null || true; done
  # Whatever else runs in the namespace was started by this script.
  for p in $(ip netns pids "$NS" 2> /dev/null); do kill "$p" 2> /dev/null || true; done
  wait 2> /dev/null || true
  ip netns del "$NS" 2> /dev/null || true
  rm -rf "/etc/netns/$NS" "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

log() { printf '# %s\n' "$*" >&2; }
now() { date +%s.%N; }
mx_ip() { echo "127.0.$((1 + $1 / 250)).$((1 + $1 % 250))"; }
is_dead() { [ "$(($1 % DEAD_EVERY))" = "$((DEAD_EVERY - 1))" ]; }
port_open() { in_ns bash -c "exec 3<> /dev/tcp/$1/$2" 2> /dev/null; }
wait_port() { # ip port
  for _ in $(seq 100); do port_open "$1" "$2" && return; sleep 0.1; done
  echo "destinations.sh: nothing listens on $1:$2" >&2
  exit 1
}

# ---- the namespace: loopback, DNS, sink --------------------------------------
ip netns add "$NS"
in_ns ip link set lo up
mkdir -p "/etc/netns/$NS"
echo "nameserver 127.0.0.1" > "/etc/netns/$NS/resolv.conf"

DEAD_IPS=""
{
  # Authoritative for example., as a domain's own DNS server is: negative
  # answers (no AAAA for an MX host) carry the SOA, so resolvers cache them.
  echo "auth-server=ns.example,127.0.0.1"
  echo "auth-zone=example"
  echo "auth-ttl=300"
  for i in $(seq 0 $((DOMAINS - 1))); do
    echo "mx-host=d$i.example,mx.d$i.example,10"
    echo "host-record=mx.d$i.example,$(mx_ip "$i")"
    is_dead "$i" && DEAD_IPS="$DEAD_IPS${DEAD_IPS:+, }$(mx_ip "$i")"
  done
  true
} > "$WORK/dnsmasq.conf"
LIVE_MX=$((DOMAINS - DOMAINS / DEAD_EVERY))
ip netns exec "$NS" dnsmasq --keep-in-foreground --no-resolv --no-hosts --port=53 \
  --listen-address=127.0.0.1 --bind-interfaces --local-ttl=300 --user=nobody \
  --conf-file="$WORK/dnsmasq.conf" --pid-file= --log-facility="$WORK/dnsmasq.log" &
PIDS="$PIDS $!"

ip netns exec "$NS" "$SMTP_SINK" -u nobody -c -m 15000 0.0.0.0:25 4096 > "$WORK/sink.out" 2> "$WORK/sink.err" &
SINK_PID=$!
PIDS="$PIDS $SINK_PID"
wait_port "$RELAY_IP" 25

# The sink's running count of messages (mesg) or sessions (sess).
sink_count() {
  local t
  t=$(tail -c 160 "$WORK/sink.out" 2> /dev/null || true)
  t=${t##*"${1:-mesg}"=}
  t=${t%%[!0-9]*}
  echo "${t:-0}"
}
# Waits until the sink has $1 more than $2 messages; prints the seconds since $3.
wait_sink() {
  local want=$(($1 + $2)) t0=$3 deadline=$((SECONDS + TIMEOUT))
  while [ "$(sink_count)" -lt "$want" ]; do
    [ $SECONDS -lt $deadline ] || { echo "destinations.sh: the sink has $(($(sink_count) - $2)) of $1 after ${TIMEOUT}s" >&2; return 1; }
    sleep 0.05
  done
  awk "BEGIN {print $(now) - $t0}"
}

blackhole() { # on|off
  if [ "$1" = on ]; then
    in_ns nft -f - << EOF
table ip blackhole {
  set dead { type ipv4_addr; elements = { $DEAD_IPS } }
  chain input { type filter hook input priority 0; policy accept; ip daddr @dead tcp dport 25 drop; }
}
EOF
  else
    in_ns nft delete table ip blackhole 2> /dev/null || true
  fi
}

# Peak PSS (KiB) of the process tree under $1, every 0.25 s, into $2.
sampler() {
  local root=$1 out=$2 peak=0 pids pss
  while kill -0 "$root" 2> /dev/null; do
    pids="$root $(ps -o pid= --ppid "$root" | tr '\n' ' ' || true)"
    pss=0
    for p in $pids; do
      pss=$((pss + $(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2> /dev/null || echo 0)))
    done
    [ "$pss" -gt "$peak" ] && peak=$pss && echo "$peak" > "$out"
    sleep 0.25
  done
}
start_sampler() { echo 0 > "$2"; sampler "$1" "$2" & SAMPLER_PID=$!; }
stop_sampler() { kill "$SAMPLER_PID" 2> /dev/null || true; wait "$SAMPLER_PID" 2> /dev/null || true; SAMPLER_PID=""; }

cat > "$WORK/load.py" << 'PY'
import asyncio, sys
host, port = sys.argv[1], int(sys.argv[2])
domains, per, sessions, part, parts = map(int, sys.argv[3:8])
line = b"x" * 62 + b"\r\n"
body = b"From: <sender@src.example>\r\nSubject: many destinations\r\n\r\n" + line * 16
ok = bad = 0
async def replies(r, n):
    codes = []
    while len(codes) < n:
        l = await r.readline()
        if not l:
            raise EOFError("connection closed")
        if l[3:4] != b"-":
            codes.append(int(l[:3]))
    return codes
async def one(rcpt):
    r, w = await asyncio.open_connection(host, port)
    try:
        if await replies(r, 1) != [220]:
            return False
        w.write(b"EHLO load.example\r\n")
        if await replies(r, 1) != [250]:
            return False
        w.write(b"MAIL FROM:<sender@src.example>\r\nRCPT TO:<%s>\r\nDATA\r\n" % rcpt)
        if await replies(r, 3) != [250, 250, 354]:
            return False
        w.write(body + b".\r\nQUIT\r\n")
        return (await replies(r, 2))[0] == 250
    finally:
        w.close()
async def session(mine):
    global ok, bad
    for d in mine:
        for _ in range(per):
            try:
                good = await asyncio.wait_for(one(b"rcpt@d%d.example" % d), 120)
            except (OSError, EOFError, ValueError, asyncio.TimeoutError):
                good = False
            ok += good
            bad += not good
async def main():
    ds = [d for d in range(domains) if d % parts == part]
    await asyncio.gather(*(session(ds[k::sessions]) for k in range(sessions)))
    print(ok, bad)
asyncio.run(main())
PY
# PER_DOMAIN messages to each domain through the server at $1 (ip:port); sets
# ACCEPTED to the number of 250s.
load() {
  local p pids=""
  for p in $(seq 0 $((LOAD_PROCS - 1))); do
    in_ns python3 "$WORK/load.py" "${1%:*}" "${1##*:}" "$DOMAINS" "$PER_DOMAIN" \
      "$((CONC / LOAD_PROCS))" "$p" "$LOAD_PROCS" > "$WORK/load.$p" &
    pids="$pids $!"
  done
  wait $pids
  ACCEPTED=$(cat "$WORK"/load.* | awk '{ok += $1; bad += $2} END {print ok}')
  [ "$ACCEPTED" = "$((DOMAINS * PER_DOMAIN))" ] || log "only $ACCEPTED messages accepted"
}

# ---- Postfix ----------------------------------------------------------------
postfix_setup() { # dir scenario
  local relayhost=""
  [ "$2" = relay ] && relayhost="[$RELAY_IP]:25"
  postfix_instance "$1" "$PF_PORT" "myhostname = destbench.localdomain
relayhost = $relayhost
smtp_dns_support_level = enabled
smtp_host_lookup = dns"
}

run_postfix() { # scenario live
  local dir=$WORK/postfix pid
  postfix_setup "$dir" "$1"
  in_ns postfix -c "$PF_CONF" start > /dev/null 2>&1
  pid=$(tr -dc 0-9 < "$dir/queue/pid/master.pid")
  wait_port 127.0.0.1 "$PF_PORT"
  measure "$2" "127.0.0.1:$PF_PORT" "$pid"
  in_ns postfix -c "$PF_CONF" stop > /dev/null 2>&1
  PF_CONF=""
  sleep 1
  report "$1" postfix "$2" - "$(postfix_queued "$dir")"
  rm -rf "$dir"
}

# ---- Postern ----------------------------------------------------------------
postern_config() { # dir scenario
  mkdir -p "$1"
  postern_toml "$1" dest.postern.test > "$1/postern.toml"
  cat >> "$1/postern.toml" << EOF

[delivery]
nameservers = ["127.0.0.1"]
destination_concurrency = 20
EOF
  [ "$2" = relay ] && printf '\n[relay]\nhost = "%s"\nport = 25\ntls = "none"\n' "$RELAY_IP" >> "$1/postern.toml"
  true
}
start_postern() { # dir
  ip netns exec "$NS" "$bin" serve --config "$1/postern.toml" > "$1/postern.log" 2>&1 < /dev/null &
  POSTERN_PID=$!
  local f=$1/data/run/listeners.json
  for _ in $(seq 1200); do
    [ -s "$f" ] && break
    kill -0 "$POSTERN_PID" 2> /dev/null || { tail -5 "$1/postern.log" >&2; exit 1; }
    sleep 0.05
  done
  POSTERN_ADDR=$(sed -n 's/.*"addr": *"\([0-9.]*:[0-9]*\)".*/\1/p' "$f" | head -1)
}
stop_postern() { kill "$POSTERN_PID"; wait "$POSTERN_PID" 2> /dev/null || true; POSTERN_PID=""; }
postern_left() { sqlite3 "$1/data/spool/queue.sqlite" "SELECT COUNT(*) FROM message"; }

run_postern() { # scenario live
  local dir=$WORK/postern cpu
  postern_config "$dir" "$1"
  start_postern "$dir"
  measure "$2" "$POSTERN_ADDR" "$POSTERN_PID"
  cpu=$(awk '{printf "%.1f", ($14 + $15) / 100}' "/proc/$POSTERN_PID/stat")
  stop_postern
  sleep 1
  report "$1" postern "$2" "$cpu" "$(postern_left "$dir")"
  [ -n "${KEEP_LOG:-}" ] && cp "$dir/postern.log" "$KEEP_LOG.$1.log"
  rm -rf "$dir"
}

# The load through the server at $2 (ip:port), its process tree under $3
# sampled for PSS, until the sink has $1 more messages: sets SECS (-1 after
# TIMEOUT), and after the server stops, `report` reads the sink.
measure() { # live addr pid
  local t0
  SINK_BASE=$(sink_count) SESS_BASE=$(sink_count sess)
  start_sampler "$3" "$WORK/pss"
  t0=$(now)
  load "$2"
  SECS=$(wait_sink "$1" "$SINK_BASE" "$t0") || SECS=-1
  stop_sampler
}

: > "$WORK/results"
report() { # scenario server live cpu_seconds left
  local total=$ACCEPTED rate=0 check=ok sink sess
  sink=$(($(sink_count) - SINK_BASE)) sess=$(($(sink_count sess) - SESS_BASE))
  [ "$SECS" != -1 ] && rate=$(awk "BEGIN {printf \"%.0f\", $3 / $SECS}")
  [ "$((sink + $5))" = "$total" ] || check="MISMATCH sink+left=$((sink + $5)) of $total accepted"
  [ "$sink" = "$3" ] || check="$check; sink $sink, live $3"
  [ "$SECS" = -1 ] && check="$check; timed out"
  printf '%-6s %-8s %6d %9.1f %7d %8.1f %6s %6d %6d %6d  %s\n' "$1" "$2" "$3" "$SECS" "$rate" \
    "$(awk "BEGIN {print $(cat "$WORK/pss") / 1024}")" "$4" "$sess" "$sink" "$5" "$check" \
    | tee -a "$WORK/results" >&2
  eval "RATE_$1_$2=$rate SECS_$1_$2=$SECS"
}

for scenario in $SCENARIOS; do
  live=$((DOMAINS * PER_DOMAIN))
  if [ "$scenario" = dead ]; then
    live=$((LIVE_MX * PER_DOMAIN))
    blackhole on
  fi
  for server in $SERVERS; do
    log "$server, scenario $scenario: $((DOMAINS * PER_DOMAIN)) messages, $live to live destinations"
    "run_$server" "$scenario" "$live"
  done
  blackhole off
done

ratio() { # a b: the ratio of the variables named a and b
  local a=${!1:--1} b=${!2:--1}
  awk "BEGIN {if ($a > 0 && $b > 0) printf \"%.2fx\", $a / $b; else printf \"-\"}"
}
echo
echo "many destinations: $DOMAINS domains x $PER_DOMAIN messages of 1 KiB, $CONC sessions, one MX each (dnsmasq, TTL 300);"
echo "dead: every ${DEAD_EVERY}th domain's MX drops SYNs; $(nproc) cores; postern $(git -C . rev-parse --short HEAD 2> /dev/null || echo '?')"
printf '%-6s %-8s %6s %9s %7s %8s %6s %6s %6s %6s  %s\n' run server live seconds msgs/s "PSS MiB" "CPU s" conns sink left check
cat "$WORK/results"
echo
for s in $SCENARIOS; do
  printf '%-6s postern/postfix %s\n' "$s" "$(ratio "RATE_${s}_postern" "RATE_${s}_postfix")"
done
for server in $SERVERS; do
  printf '%-8s mx/relay %s   dead/relay %s   live mail, dead run against mx run (time): %s\n' "$server" \
    "$(ratio "RATE_mx_$server" "RATE_relay_$server")" "$(ratio "RATE_dead_$server" "RATE_relay_$server")" \
    "$(ratio "SECS_mx_$server" "SECS_dead_$server")"
done
echo "msgs/s: live messages per second from the first session until the sink had them all (the"
echo "dead run also accepts the dead domains' tenth, so the same speed shows there as 0.9x);"
echo "CPU s: the server's CPU time (Postern's process; not measured for Postfix's many);"
echo "conns: connections the sink took (reuse); left: messages still queued after a clean stop"
