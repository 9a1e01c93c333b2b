#!/usr/bin/env bash
# Memory of idle connections (issue #11 item 3): what 1,000 greeted sessions that
# send nothing cost the server, and whether that memory comes back once they close.
#
#   bench/idle.sh                          # target/release/postern, built if missing
#   POSTERN_REV=HEAD bench/idle.sh         # git-archive that commit and build it
#   STEPS="1000 5000 10000" SETTLE=10 POSTFIX=1 bench/idle.sh
#
# Run as root (Postfix is installed and started with /work/shared/bench/
# peers-setup.sh, as bench/accept.sh does). Each Postern scenario gets a fresh
# data_dir and process; a Python client (selectors, one thread) opens STEPS
# connections, brings each to idle, and the server's PSS (smaps_rollup) is read
# at the baseline, at every step, and SETTLE seconds after all have closed (the
# wait starts once the server has closed its side of every connection).
#   mta plain            connect, read the 220 greeting
#   mta starttls         greeting, EHLO, STARTTLS, TLS handshake (Python ssl)
#   submission plain     greeting (after the listener's wait for a ClientHello)
#   submission starttls  as mta starttls, on the submission listener
#   submissions implicit TLS handshake first, then the 220 greeting over TLS
# Postfix is measured plaintext only (the peer configuration has no TLS), with
# POSTFIX_CONNS connections (default: its default_process_limit, 100: one smtpd
# process per connection, so more would wait in the listen queue ungreeted); its
# PSS is summed over master and all its descendants. Postfix keeps an smtpd
# idle for max_idle (100 s) after its client leaves, so its "after close" still
# holds those processes.
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS=${STEPS:-"1000 5000 10000"}
SETTLE=${SETTLE:-10}
POSTFIX=${POSTFIX:-1}
SCENARIOS=${SCENARIOS:-"mta:plain mta:starttls submission:plain submission:starttls submissions:implicit"}
PEER_BENCH_DIR=${PEER_BENCH_DIR:-/work/shared/bench}
WORK=${BENCH_WORKDIR:-/var/tmp}/postern-idle.$$

[ "$(id -u)" = 0 ] || { echo "idle.sh: run as root (Postfix is started with peers-setup.sh)" >&2; exit 1; }
max=0; for n in $STEPS; do [ "$n" -gt "$max" ] && max=$n; done
# The client and the server each hold one socket per connection.
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge $((max + 200)) ] || { echo "idle.sh: open-file limit $(ulimit -n) is below $((max + 200)) (raise ulimit -Hn)" >&2; exit 1; }

. bench/binary.sh
. bench/serve.sh

server=""
started_postfix=0
mkdir -p "$WORK" bench/results
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  [ "$started_postfix" = 1 ] && "$PEER_BENCH_DIR/peers-setup.sh" stop postfix >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cat > "$WORK/client.py" <<'PY'
# usage: client.py PID TREE HOST PORT MODE SETTLE STEP...
# Prints one TSV line per measurement: phase, connections, PSS KiB, processes.
import errno, os, selectors, socket, ssl, sys, time

pid, tree, host, port, mode, settle = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3], int(sys.argv[4]), sys.argv[5], float(sys.argv[6])
steps = [int(s) for s in sys.argv[7:]]

def procs():
    if not tree:
        return [pid]
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rfind(")") + 2:].split()[1]), []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out

def pss():
    total, ps = 0, procs()
    for p in ps:
        try:
            total += sum(int(l.split()[1]) for l in open(f"/proc/{p}/smaps_rollup") if l.startswith("Pss:"))
        except OSError:
            pass
    return total, len(ps)

def server_sockets():
    """The server's side of its TCP connections that have not ended yet."""
    n = 0
    for line in open("/proc/net/tcp").readlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if int(local.split(":")[1], 16) == port and state in ("01", "08", "09"):
            n += 1
    return n

def report(phase, n):
    kib, nprocs = pss()
    print(f"{phase}\t{n}\t{kib}\t{nprocs}", flush=True)

tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
tls.check_hostname = False
tls.verify_mode = ssl.CERT_NONE

class Conn:
    """One client: connect, then the steps of `mode` up to idle."""
    def __init__(self):
        self.sock = socket.socket()
        self.sock.setblocking(False)
        self.sock.connect_ex((host, port))
        self.buf = b""
        self.plan = {"plain": ["greet"], "starttls": ["greet", "ehlo", "starttls", "handshake"],
                     "implicit": ["handshake", "greet"]}[mode]
        self.step = "connect"

    def next(self):
        self.step = self.plan.pop(0) if self.plan else "idle"
        if self.step == "ehlo":
            self.sock.send(b"EHLO idle.test\r\n")
        elif self.step == "starttls":
            self.sock.send(b"STARTTLS\r\n")
        elif self.step == "handshake":
            self.sock = tls.wrap_socket(self.sock, do_handshake_on_connect=False)

    def reply(self):
        """A whole reply read, or None; raises on EOF."""
        try:
            data = self.sock.recv(65536)
        except (ssl.SSLWantReadError, BlockingIOError):
            return None
        if not data:
            raise ConnectionError("closed by the server: " + self.buf.decode(errors="replace"))
        self.buf += data
        lines = self.buf.split(b"\r\n")
        for i, line in enumerate(lines[:-1]):
            if line[3:4] == b" ":
                self.buf = b"\r\n".join(lines[i + 1:])
                return line
        return None

    def advance(self, events):
        """Moves as far as the socket allows; returns the events to wait for."""
        while True:
            if self.step == "connect":
                if not events & selectors.EVENT_WRITE:
                    return selectors.EVENT_WRITE
                err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
                self.next()
            elif self.step == "handshake":
                try:
                    self.sock.do_handshake()
                except ssl.SSLWantReadError:
                    return selectors.EVENT_READ
                except ssl.SSLWantWriteError:
                    return selectors.EVENT_WRITE
                self.next()
            elif self.step == "idle":
                return 0
            else:
                line = self.reply()
                if line is None:
                    return selectors.EVENT_READ
                want = b"250" if self.step == "ehlo" else b"220"
                if not line.startswith(want):
                    raise ConnectionError(f"{self.step}: {line!r}")
                self.next()
            events = selectors.EVENT_READ | selectors.EVENT_WRITE

sel = selectors.DefaultSelector()
idle, busy, failed = [], 0, 0
IN_FLIGHT = 200  # connections between connect and idle at once: stays under the listen backlog

report("baseline", 0)
for target in steps:
    while len(idle) < target:
        while busy < IN_FLIGHT and len(idle) + busy < target:
            c = Conn()
            sel.register(c.sock, selectors.EVENT_WRITE, c)
            busy += 1
        for key, events in sel.select(timeout=30):
            c = key.data
            try:
                want = c.advance(events)
            except (OSError, ConnectionError, ssl.SSLError) as e:
                print(f"# connection failed: {e}", file=sys.stderr)
                failed += 1
                if failed > 10:
                    sys.exit("too many failed connections")
                sel.unregister(key.fileobj)
                c.sock.close()
                busy -= 1
                continue
            if want == 0:
                sel.unregister(key.fileobj)
                idle.append(c)
                busy -= 1
            elif c.sock is not key.fileobj:
                sel.unregister(key.fileobj)
                sel.register(c.sock, want, c)
            else:
                sel.modify(c.sock, want, c)
    time.sleep(1)
    report("open", target)
for c in idle:
    c.sock.close()
deadline = time.monotonic() + 60
while server_sockets() and time.monotonic() < deadline:
    time.sleep(0.2)
time.sleep(settle)
report("closed", 0)
PY

run_client() { # label pid tree port mode
  python3 "$WORK/client.py" "$2" "$3" 127.0.0.1 "$4" "$5" "$SETTLE" "${@:6}" | sed "s/^/$1\t/" | tee -a "$WORK/rows.tsv" >&2
}

for scenario in $SCENARIOS; do
  role=${scenario%%:*}; mode=${scenario##*:}
  dir=$WORK/$role-$mode
  mkdir -p "$dir"
  cat > "$dir/postern.toml" <<EOF
hostname = "bench.test"
data_dir = "$dir/data"
[[listener]]
addr = "127.0.0.1:0"
role = "$role"
[limits]
max_connections = $((max + 100))
max_connections_per_ip = $((max + 100))
# The slowest scenario takes minutes to open every connection: the first ones
# must still be open when the last is.
command_timeout = 3600
[delivery]
hold = true
EOF
  start_postern "$dir/postern.toml" "$dir"
  sleep 1
  echo "# postern $role $mode: pid $server, port $port" >&2
  run_client "postern $role $mode" "$server" 0 "$port" "$mode" $STEPS
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
done

postfix_note="Postfix not measured (POSTFIX=0)"
if [ "$POSTFIX" = 1 ]; then
  "$PEER_BENCH_DIR/peers-setup.sh" install > "$WORK/peers-install.log" 2>&1 || { cat "$WORK/peers-install.log" >&2; exit 1; }
  pf_pid() { local p; p=$(tr -dc 0-9 < /var/spool/postfix/pid/master.pid 2>/dev/null || true)
             [ -n "$p" ] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = master ] && echo "$p"; return 0; }
  if [ -z "$(pf_pid)" ]; then
    "$PEER_BENCH_DIR/peers-setup.sh" start postfix >&2
    started_postfix=1
  fi
  limit=$(postconf -h default_process_limit)
  conns=${POSTFIX_CONNS:-$limit}
  postfix_note="Postfix $(postconf -h mail_version): $conns connections (default_process_limit = $limit), plaintext; PSS of master + all its children"
  run_client "postfix mta plain" "$(pf_pid)" 1 10025 plain "$conns"
fi

rev=$(git rev-parse --short HEAD 2>/dev/null || echo "?")
out=bench/results/idle-$(date +%Y%m%d-%H%M%S).txt
{
  echo "Idle connections: server PSS (MiB), fresh server per row; postern: ${POSTERN_REV:-$bin} (checkout at $rev)"
  echo "$postfix_note"
  echo "host: $(nproc) cores, $(uname -r); settle ${SETTLE}s after close; $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  awk -F'\t' '
    { key = $1; if (!(key in seen)) { seen[key] = 1; order[++n] = key }
      if ($2 == "baseline") base[key] = $4
      if ($2 == "open") { at[key, $3] = $4; last[key] = $3; if (!($3 in col)) { col[$3] = 1; cols[++nc] = $3 } }
      if ($2 == "closed") after[key] = $4 }
    END {
      pf = "postfix mta plain"
      if (pf in last) pfper = (at[pf, last[pf]] - base[pf]) / last[pf]
      printf "%-28s %8s", "server role tls", "baseline"
      for (i = 1; i <= nc; i++) printf " %9s", "@" cols[i]
      printf " %14s %8s %7s %11s\n", "per 1000 conns", "closed", "closed/", "vs Postfix"
      printf "%-28s %8s", "", ""
      for (i = 1; i <= nc; i++) printf " %9s", ""
      printf " %14s %8s %7s %11s\n", "MiB", "", "baseline", "per conn"
      for (k = 1; k <= n; k++) {
        key = order[k]; per = (at[key, last[key]] - base[key]) / last[key]
        printf "%-28s %8.1f", key, base[key] / 1024
        for (i = 1; i <= nc; i++) if ((key, cols[i]) in at) printf " %9.1f", at[key, cols[i]] / 1024; else printf " %9s", "-"
        printf " %14.2f %8.1f %6.2fx", per * 1000 / 1024, after[key] / 1024, after[key] / base[key]
        if (pfper > 0 && key != pf) printf " %10.1fx", pfper / per; else printf " %11s", "-"
        printf "\n"
      }
      print ""
      print "per 1000 conns: (PSS at the largest step - baseline) / connections x 1000; vs Postfix: how many times less than Postfix per connection"
      print "targets (issue #11 item 3): 10,000 idle sessions in at most 100 MiB; after close, within 2x of the baseline"
    }' "$WORK/rows.tsv"
} | tee "$out"
