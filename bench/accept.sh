#!/usr/bin/env bash
# bench/accept.sh — durable acceptance rate of Postern against Postfix, same run,
# same harness.
#
# WHAT IS MEASURED
#   Messages per second ACCEPTED DURABLY: Postfix's smtp-source opens one SMTP
#   session per message (no -d), sends MAIL/RCPT/DATA with a body of SIZE bytes,
#   and the clock stops when smtp-source has had a 250 for every message and quit.
#   Both servers answer that 250 only after the message is synced to disk:
#   Postfix fsyncs its queue file; Postern commits a SQLite WAL transaction with
#   synchronous=FULL (group commit: one sync covers every message waiting). A
#   durability probe (strace) checks this once per server at the start.
#   The figure is the harness's `msgs_per_s` column (accepted / seconds); the
#   table shows the median of the runs, min..max, and Postern/Postfix.
#
#   Delivery is not what is measured. Postfix relays everything to the harness's
#   smtp-sink while it accepts (its e2e rate is shown for reference). Postern:
#     POSTERN_DELIVERY=hold (default): `[delivery] hold = true`, accepted mail
#       stays in the spool: acceptance alone, as the issue's target is stated
#       (and a Postern from before delivery existed behaves so anyway; the key
#       is left out for a binary that does not know it).
#     POSTERN_DELIVERY=relay: Postern relays everything to the same sink while
#       it accepts, as Postfix does; its e2e column is then meaningful. Slower to
#       run: the harness waits for the sink to have every message after each run.
#   The harness (peer-bench.sh) waits, after the source phase, for the sink to
#   receive every message, bounded by -T. That wait is outside the acceptance
#   clock: it costs wall time only. When Postern keeps its mail, the wait always
#   runs out, so Postern's -T is sized per scenario from a calibration run (3x
#   the expected source-phase time + 3 s, at least T_MIN_POSTERN=10 s; if a
#   source phase ever hit it, smtp-source would be cut off and the row would show
#   src_errors "(rc=124)" and accepted < msgs). When Postern delivers, and for
#   Postfix, -T is T_POSTFIX=120 s (the wait ends when the sink has everything).
#   Postern's e2e and cpu_busy columns are meaningless when it keeps its mail
#   (cpu_busy includes the idle wait); the table shows "-" for its e2e then.
#
#   Peak PSS: the harness samples the summed PSS of the server's process tree
#   (Postern: one process; Postfix: master and all its children) every 0.25 s;
#   the table shows the highest sample over a scenario's runs. Postfix keeps idle
#   smtpd processes for 100 s, so its PSS in a scenario can include processes
#   left over from the previous one.
#
# MATRIX (defaults; each figure a median of RUNS=3 runs)
#   body sizes 1024 and 102400 bytes x 1 / 10 / 50 concurrent sessions
#   1 KiB: 4000 messages per run, 100 KiB: 1000 per run (twice the harness
#   defaults: at 50 clients Postern takes ~1.5 s for 4000, and shorter runs are
#   dominated by start-up noise). Postfix at 1 client (~500/s) is the long
#   pole. About 7.5 minutes on a 2-core machine (budget: 15), plus 1-3 minutes
#   of build with POSTERN_REV. With POSTERN_DELIVERY=relay add the time Postern
#   takes to deliver 3 x N messages per scenario (1 KiB goes at ~90/s up to
#   9a0a2cb: ~2.5 minutes per 1 KiB scenario with N_SMALL=4000), so use e.g.
#   CONCS="10 50" N_SMALL=2000 N_LARGE=500 there (~4 minutes).
#   Scenarios are interleaved: for each scenario Postfix runs, then Postern, so
#   slow drift on a shared machine hits both sides of a ratio alike.
#   Postern gets a fresh data_dir and a fresh process per scenario (with hold its
#   spool only grows). Before its runs, a calibration run of
#   n/5 messages through the harness (not counted) sizes -T and tells whether
#   Postern delivers; it also warms Postern up. Postfix is started once and its
#   first run of each scenario is its warm-up, as it is for Postern's median.
#   After every Postern scenario the script stops Postern and counts the messages
#   in its spool (`postern queue list --json`) plus those the sink received: that
#   must be at least every 250 given (calibration + runs), else the row says
#   MISSING ("kept a/b" in the table).
#
# USAGE (as root: peers-setup.sh installs Postfix with apt and starts it)
#   bench/accept.sh
#   environment:
#     POSTERN_BIN   postern binary (default: $CARGO_TARGET_DIR/release/postern if
#                   CARGO_TARGET_DIR is set, else <repo>/target/release/postern;
#                   built with `cargo build --release` if missing)
#     POSTERN_REV   a git revision (e.g. HEAD): export it with `git archive` and
#                   build that, so the figures belong to a commit; overrides
#                   POSTERN_BIN (target dir: CARGO_TARGET_DIR or target/bench-rev)
#     PEER_BENCH_DIR  where peers-setup.sh / peer-bench.sh live (/work/shared/bench)
#     SIZES="1024 102400"  CONCS="1 10 50"  RUNS=3  N_SMALL=4000  N_LARGE=1000
#     T_POSTFIX=120  T_MIN_POSTERN=10
#     BENCH_WORKDIR  parent of the temporary data dirs (default: /var/tmp, on the
#                   same disk as Postfix's queue; never a tmpfs)
#     PROBE=1       run durability-probe.sh once against each server first
#     POSTERN_DELIVERY=hold|relay   see above
#   Results: bench/results/accept-<time>.tsv (all harness lines) and .txt (table).
#
# Everything this script starts it stops by PID: Postern (kill PID), Postfix
# (peers-setup.sh stop, which uses Postfix's own master PID), and the harness
# stops its own smtp-sink and sampler. Postfix is stopped only if this script
# started it.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
PEER_BENCH_DIR=${PEER_BENCH_DIR:-/work/shared/bench}
PEERS_SETUP=$PEER_BENCH_DIR/peers-setup.sh
PEER_BENCH=$PEER_BENCH_DIR/peer-bench.sh
PROBE_SCRIPT=$PEER_BENCH_DIR/durability-probe.sh
. "$HERE/postern.sh"

SIZES=${SIZES:-"1024 102400"}
CONCS=${CONCS:-"1 10 50"}
RUNS=${RUNS:-3}
N_SMALL=${N_SMALL:-4000}
N_LARGE=${N_LARGE:-1000}
T_POSTFIX=${T_POSTFIX:-120}
T_MIN_POSTERN=${T_MIN_POSTERN:-10}
PROBE=${PROBE:-1}
POSTERN_DELIVERY=${POSTERN_DELIVERY:-hold}
case "$POSTERN_DELIVERY" in relay|hold) ;; *) echo "accept.sh: POSTERN_DELIVERY must be relay or hold" >&2; exit 2 ;; esac
SINK_PORT=10099
POSTFIX_ADDR=127.0.0.1:10025
SMTP_SOURCE=${SMTP_SOURCE:-/usr/sbin/smtp-source}

if [ -n "${POSTERN_BIN:-}" ]; then
    BIN=$POSTERN_BIN
elif [ -n "${CARGO_TARGET_DIR:-}" ]; then
    BIN=$CARGO_TARGET_DIR/release/postern
else
    BIN=$REPO/target/release/postern
fi

die() { echo "accept.sh: $*" >&2; exit 1; }
log() { echo "# $*" >&2; }

[ "$(id -u)" = 0 ] || die "run as root (peers-setup.sh installs and starts Postfix)"
for f in "$PEERS_SETUP" "$PEER_BENCH"; do [ -x "$f" ] || die "missing $f (set PEER_BENCH_DIR)"; done

# ---- state for cleanup ---------------------------------------------------------
POSTERN_PID=""
STARTED_POSTFIX=0
WORKROOT=""

stop_postern() {
    [ -n "$POSTERN_PID" ] || return 0
    if kill -0 "$POSTERN_PID" 2>/dev/null; then
        kill -TERM "$POSTERN_PID" 2>/dev/null || true
        local i
        for i in $(seq 1 50); do kill -0 "$POSTERN_PID" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$POSTERN_PID" 2>/dev/null; then
            log "postern (pid $POSTERN_PID) did not exit on TERM; sending KILL"
            kill -KILL "$POSTERN_PID" 2>/dev/null || true
        fi
    fi
    wait "$POSTERN_PID" 2>/dev/null || true
    POSTERN_PID=""
}

cleanup() {
    local rc=$?
    stop_postern
    if [ "$STARTED_POSTFIX" = 1 ]; then
        "$PEERS_SETUP" stop postfix >&2 || true
        "$PEERS_SETUP" purge postfix >/dev/null 2>&1 || true
    fi
    [ -n "$WORKROOT" ] && rm -rf "$WORKROOT"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---- a work dir on a real disk ----------------------------------------------------
PARENT=${BENCH_WORKDIR:-/var/tmp}
[ "$(stat -f -c %T "$PARENT")" != tmpfs ] || die "$PARENT is a tmpfs; set BENCH_WORKDIR to a directory on disk"
WORKROOT=$(mktemp -d "$PARENT/postern-accept.XXXXXX")
log "work dir $WORKROOT ($(df -P "$WORKROOT" | awk 'NR==2{print $1}'); Postfix queue on $(df -P /var/spool | awk 'NR==2{print $1}'))"

# ---- the Postern binary ---------------------------------------------------------
if [ -n "${POSTERN_REV:-}" ]; then
    # Measure a commit, not whatever the working tree holds right now: export it
    # and build the export (its own target dir, so target/release is untouched).
    rev=$(git -C "$REPO" rev-parse --short "$POSTERN_REV^{commit}") || die "no such revision $POSTERN_REV"
    SRC=$WORKROOT/src-$rev
    mkdir -p "$SRC"
    git -C "$REPO" archive "$rev" | tar -x -C "$SRC"
    # git archive stamps files with the commit time; cargo compares mtimes and
    # keeps paths relative to the package, so an older commit exported after a
    # newer build would look up to date. Make the export newer than any build.
    find "$SRC" -type f -exec touch {} +
    TD=${CARGO_TARGET_DIR:-$REPO/target/bench-rev}
    log "building $POSTERN_REV ($rev) from an export in $SRC (target dir $TD)"
    (cd "$SRC" && CARGO_TARGET_DIR=$TD cargo build --release --bin postern) >&2
    BIN=$TD/release/postern
    BUILT_FROM="commit $rev (exported)"
else
    if [ ! -x "$BIN" ]; then
        log "building $BIN (cargo build --release)"
        if [ -n "${POSTERN_BIN:-}" ]; then die "POSTERN_BIN=$POSTERN_BIN is not executable"; fi
        (cd "$REPO" && cargo build --release --bin postern) >&2
        [ -x "$BIN" ] || die "build finished but $BIN is missing"
    fi
    if [ -n "$(find "$REPO/src" "$REPO/migrations" "$REPO/Cargo.toml" "$REPO/Cargo.lock" -newer "$BIN" -print -quit 2>/dev/null)" ]; then
        log "WARNING: sources are newer than $BIN; run cargo build --release (or delete the binary) to measure them"
    fi
    BUILT_FROM="$BIN, built $(stat -c '%y' "$BIN" | cut -d. -f1) (checkout now at $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)$(git -C "$REPO" diff --quiet HEAD -- src migrations 2>/dev/null || echo ', src modified'))"
fi
[ -x "$BIN" ] || die "no postern binary at $BIN"
log "postern: $BUILT_FROM"

RESULTS=$HERE/results
mkdir -p "$RESULTS"
STAMP=$(date +%Y%m%d-%H%M%S)
TSV=$RESULTS/accept-$STAMP.tsv
TXT=$RESULTS/accept-$STAMP.txt
: > "$TSV"

# ---- Postfix ----------------------------------------------------------------------
log "installing/configuring peers (idempotent)"
"$PEERS_SETUP" install > "$WORKROOT/peers-install.log" 2>&1 || { cat "$WORKROOT/peers-install.log" >&2; die "peers-setup.sh install failed"; }
[ -x "$SMTP_SOURCE" ] || die "missing $SMTP_SOURCE"
port_open "$SINK_PORT" && die "something already listens on 127.0.0.1:$SINK_PORT (the harness's sink port)"

postfix_pid() { local p; p=$(tr -dc 0-9 < /var/spool/postfix/pid/master.pid 2>/dev/null || true)
                [ -n "$p" ] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = master ] && echo "$p"; return 0; }
if [ -n "$(postfix_pid)" ]; then
    log "postfix already running (pid $(postfix_pid)); using it and leaving it running"
else
    "$PEERS_SETUP" purge postfix >/dev/null 2>&1 || true
    "$PEERS_SETUP" start postfix >&2
    STARTED_POSTFIX=1
fi
PF_PID=$(postfix_pid)
[ -n "$PF_PID" ] || die "postfix did not start"

# ---- Postern ----------------------------------------------------------------------
# Starts a fresh Postern in $1 (a new directory); sets POSTERN_PID and POSTERN_ADDR.
start_postern() {
    local dir=$1
    mkdir -p "$dir"
    { echo "# written by bench/accept.sh"; postern_toml "$dir" bench.postern.test; } > "$dir/postern.toml"
    cat >> "$dir/postern.toml" <<EOF

# Deliver like Postfix does here: everything to the harness's smtp-sink, no TLS.
# (A Postern that does not deliver yet ignores this.) No MX lookups are needed;
# the loopback nameserver makes sure none could leave the machine.
[relay]
host = "127.0.0.1"
port = $SINK_PORT
tls = "none"

[delivery]
nameservers = ["127.0.0.1"]
$( [ "$HOLD_KEY" = 1 ] && echo 'hold = true' || echo "$SAME_CONCURRENCY" )
EOF
    "$BIN" serve --config "$dir/postern.toml" > "$dir/postern.log" 2>&1 < /dev/null &
    POSTERN_PID=$!
    local f=$dir/data/run/listeners.json i
    for i in $(seq 1 100); do
        [ -s "$f" ] && break
        kill -0 "$POSTERN_PID" 2>/dev/null || { tail -5 "$dir/postern.log" >&2; die "postern exited at startup"; }
        sleep 0.1
    done
    [ -s "$f" ] || die "postern wrote no $f within 10 s"
    POSTERN_ADDR=$(sed -n 's/.*"addr": *"\([0-9.]*:[0-9]*\)".*/\1/p' "$f" | head -1)
    [ -n "$POSTERN_ADDR" ] || die "no addr in $f"
    port_open "${POSTERN_ADDR##*:}" || die "postern does not answer on $POSTERN_ADDR"
}

spool_count() { # config -> number of messages in Postern's spool
    { "$BIN" queue list --json --config "$1" 2>/dev/null || true; } | { grep -o '"id"' || true; } | wc -l
}

# Does this Postern deliver, i.e. know [delivery] hold? (Before delivery existed it
# had no such key, kept every message, and would refuse the file with it.)
HOLD_KEY=0
# Postfix opens up to default_destination_concurrency_limit (20) connections to
# its relayhost; Postern's per-destination default is 4. The same limit on both
# sides, so the figure compares the servers and not two settings.
# MATCH_POSTFIX_CONCURRENCY=0 keeps Postern's own default instead.
SAME_CONCURRENCY=""
[ "${MATCH_POSTFIX_CONCURRENCY:-1}" = 1 ] &&
    SAME_CONCURRENCY="destination_concurrency = $(postconf -h default_destination_concurrency_limit 2>/dev/null || echo 20)"
mkdir -p "$WORKROOT/hold-check"
printf 'hostname = "bench.postern.test"\ndata_dir = "%s"\n[delivery]\nhold = true\n' "$WORKROOT/hold-check/data" > "$WORKROOT/hold-check/postern.toml"
if "$BIN" config check --config "$WORKROOT/hold-check/postern.toml" > /dev/null 2>&1; then
    [ "$POSTERN_DELIVERY" = hold ] && HOLD_KEY=1
    DELIVERY_NOTE="Postern delivery: $POSTERN_DELIVERY ($( [ "$HOLD_KEY" = 1 ] && echo '[delivery] hold = true: accepted mail stays in the spool' || echo 'relays everything to the harness sink, as Postfix does'))"
else
    DELIVERY_NOTE="Postern delivery: none (this version does not deliver; accepted mail stays in the spool)"
fi
log "$DELIVERY_NOTE"

# ---- durability probe (one message each, straced) ------------------------------------
if [ "$PROBE" = 1 ] && [ -x "$PROBE_SCRIPT" ] && command -v strace >/dev/null; then
    start_postern "$WORKROOT/probe"
    log "durability probe: postern $POSTERN_ADDR (pid $POSTERN_PID)"
    "$PROBE_SCRIPT" -p "$POSTERN_PID" "$POSTERN_ADDR" 2>&1 | grep -E 'VERDICT|client rc|fdatasync|fsync' | sed 's/^/#   postern: /' >&2 || true
    stop_postern
    log "durability probe: postfix $POSTFIX_ADDR (pid $PF_PID)"
    "$PROBE_SCRIPT" -p "$PF_PID" "$POSTFIX_ADDR" 2>&1 | grep -E 'VERDICT|client rc' | sed 's/^/#   postfix: /' >&2 || true
fi

# ---- the matrix --------------------------------------------------------------------
printf '#scenario\trun\tmsgs\taccepted\tseconds\tmsgs_per_s\tdelivered\te2e_seconds\te2e_msgs_per_s\tsrc_errors\tpeak_rss_kb\tpeak_pss_kb\tmax_procs\tcpu_busy_pct\te2e99_seconds\n' | tee -a "$TSV" >&2
SPOOLCHECK=$WORKROOT/spoolcheck   # scenario, stored+delivered, accepted, stored, delivered
: > "$SPOOLCHECK"
T_START=$SECONDS

for size in $SIZES; do
    if [ "$size" -lt 10240 ]; then n=$N_SMALL; else n=$N_LARGE; fi
    for c in $CONCS; do
        tag="c$c-$((size / 1024))k"

        # Postfix
        "$PEER_BENCH" -q -n postfix -p "$PF_PID" -c "$c" -z "$size" -m "$n" -M "$n" -r "$RUNS" \
            -T "$T_POSTFIX" "$POSTFIX_ADDR" "$SINK_PORT" | tee -a "$TSV" >&2 || true
        left=$(postqueue -p 2>/dev/null | grep -c '^[0-9A-F]' || true)
        [ "${left:-0}" = 0 ] || log "postfix still has $left queued message(s) after $tag"

        # Postern: fresh spool and process
        dir=$WORKROOT/$tag
        start_postern "$dir"
        # Calibration through the harness (rows kept apart, not counted): how long
        # n messages take, and whether this Postern delivers to the sink at all.
        ncal=$(( n / 5 )); [ "$ncal" -ge $((2 * c)) ] || ncal=$((2 * c))
        "$PEER_BENCH" -q -n postern -p "$POSTERN_PID" -c "$c" -z "$size" -m "$ncal" -M "$ncal" -r 1 \
            -T "$T_MIN_POSTERN" "$POSTERN_ADDR" "$SINK_PORT" 2> "$dir/cal.err" | awk -F'\t' '$2 == 1' > "$dir/cal.tsv" || true
        read -r cal_secs cal_acc cal_deliv < <(awk -F'\t' '{ print $5, $4, $7 }' "$dir/cal.tsv") || true
        [ -n "${cal_secs:-}" ] || { cat "$dir/cal.tsv" >&2; die "postern calibration for $tag failed"; }
        if [ "${cal_deliv:-0}" -gt 0 ]; then
            # it delivers: the harness's wait ends when the sink has everything
            tb=$T_POSTFIX; mode="delivers to the sink"
        else
            tb=$(awk -v s="$cal_secs" -v n="$n" -v k="$ncal" -v m="$T_MIN_POSTERN" \
                'BEGIN { t = int(3 * s * n / k) + 3; if (t < m) t = m; if (t > 300) t = 300; print t }')
            mode="does not deliver"
        fi
        log "postern $tag on $POSTERN_ADDR (pid $POSTERN_PID): calibration $cal_acc/$ncal accepted in $cal_secs s, $cal_deliv delivered ($mode) -> -T $tb"
        "$PEER_BENCH" -q -n postern -p "$POSTERN_PID" -c "$c" -z "$size" -m "$n" -M "$n" -r "$RUNS" \
            -T "$tb" "$POSTERN_ADDR" "$SINK_PORT" | tee -a "$TSV" "$dir/rows.tsv" >&2 || true
        stop_postern
        # Every 250 must be in the spool or at the sink.
        read -r accepted delivered < <(awk -F'\t' '$2 != "median" { a += $4; d += $7 } END { print a + 0, d + 0 }' "$dir/rows.tsv" "$dir/cal.tsv")
        stored=$(spool_count "$dir/postern.toml")
        echo "postern-$tag $((stored + delivered)) $accepted $stored $delivered" >> "$SPOOLCHECK"
        if [ $((stored + delivered)) -lt "$accepted" ]; then
            log "SPOOL CHECK FAILED for $tag: $accepted accepted, $stored still in the spool + $delivered at the sink"
        fi
        sed 's/\x1b\[[0-9;]*m//g' "$dir/postern.log" | grep -E ' (ERROR|WARN) ' | grep -v 'event="hold"' | head -3 | sed 's/^/#   postern log: /' >&2 || true
        rm -rf "$dir"
    done
done
ELAPSED=$((SECONDS - T_START))

# ---- the table -------------------------------------------------------------------------
{
echo "Postern vs Postfix: messages/s accepted durably (smtp-source, 1 message per session, median of $RUNS runs)"
echo "postern: $BUILT_FROM"
echo "$DELIVERY_NOTE; Postfix relays everything to the harness sink"
echo "host: $(nproc) cores, $(uname -r); postfix $(postconf -h mail_version 2>/dev/null); matrix ${ELAPSED}s; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
awk -F'\t' -v check="$SPOOLCHECK" '
    BEGIN {
        # scenario, stored+delivered, accepted, stored, delivered
        while ((getline l < check) > 0) { split(l, w, " "); kept[w[1]] = w[2]; expect[w[1]] = w[3] }
    }
    /^#/ || $2 == "median" { next }
    {
        name = $1; srv = substr(name, 1, index(name, "-") - 1); tag = substr(name, index(name, "-") + 1)
        if (!(tag in seen)) { seen[tag] = 1; order[++nt] = tag }
        k = ++cnt[srv, tag]; rate[srv, tag, k] = $6 + 0; msgs[tag] = $3
        e2e[srv, tag, k] = ($7 + 0 > 0 ? $9 + 0 : -1)
        if ($12 != "-" && $12 + 0 > pss[srv, tag]) pss[srv, tag] = $12 + 0
        err[srv, tag] += $10 + 0; if ($4 + 0 != $3 + 0) short[srv, tag] += $3 - $4
    }
    function med(arr, srv, tag,   n, m, i, j, a, t) {
        n = cnt[srv, tag]; m = 0
        for (i = 1; i <= n; i++) if (arr[srv, tag, i] >= 0) a[++m] = arr[srv, tag, i]
        if (m == 0) { lo = hi = -1; return -1 }
        for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        lo = a[1]; hi = a[m]
        return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
    }
    function num(v) { return v < 0 ? "-" : sprintf("%.0f", v) }
    END {
        print "accepted msgs/s: median (min..max) of the runs; PSS: highest sample; e2e: msgs/s until the sink had all (median)"
        printf "%-5s %7s %5s | %7s %11s %7s %5s | %7s %11s %7s %5s | %6s | %s\n", "size", "clients", "msgs",
            "postfix", "min..max", "e2e", "PSS", "postern", "min..max", "e2e", "PSS", "ratio", "notes"
        printf "%-5s %7s %5s | %7s %11s %7s %5s | %7s %11s %7s %5s | %6s |\n", "", "", "",
            "msgs/s", "", "msgs/s", "MiB", "msgs/s", "", "msgs/s", "MiB", ""
        for (i = 1; i <= nt; i++) {
            tag = order[i]; split(tag, p, "-"); c = substr(p[1], 2); sz = p[2]
            f = med(rate, "postfix", tag); flo = lo; fhi = hi; fe = med(e2e, "postfix", tag)
            s = med(rate, "postern", tag); slo = lo; shi = hi; se = med(e2e, "postern", tag)
            note = ""
            if (err["postfix", tag] + short["postfix", tag] > 0) note = note sprintf("postfix errors %d short %d; ", err["postfix", tag], short["postfix", tag])
            if (err["postern", tag] + short["postern", tag] > 0) note = note sprintf("postern errors %d short %d; ", err["postern", tag], short["postern", tag])
            if (("postern-" tag) in kept) note = note sprintf("kept %d/%d%s", kept["postern-" tag], expect["postern-" tag],
                                                             (kept["postern-" tag] >= expect["postern-" tag] ? " ok" : " MISSING"))
            printf "%-5s %7s %5s | %7s %11s %7s %5.1f | %7s %11s %7s %5.1f | %6s | %s\n", sz, c, msgs[tag],
                num(f), num(flo) ".." num(fhi), num(fe), pss["postfix", tag] / 1024,
                num(s), num(slo) ".." num(shi), num(se), pss["postern", tag] / 1024,
                (f > 0 ? sprintf("%.2fx", s / f) : "-"), note
            ratio[tag] = (f > 0 ? s / f : -1); ppss[tag] = pss["postern", tag] / 1024
        }
        print ""
        print "targets (issue): at 10 and 50 clients with 1 KiB messages, Postern >= 3x Postfix; Postern peak PSS < 32 MiB at 50 clients"
        for (i = 1; i <= nt; i++) {
            tag = order[i]; split(tag, p, "-"); c = substr(p[1], 2)
            if (p[2] == "1k" && (c == 10 || c == 50))
                printf "  %-8s ratio %.2fx  %s\n", tag, ratio[tag], (ratio[tag] >= 3 ? "MET" : "NOT MET")
            if (c == 50)
                printf "  %-8s Postern peak PSS %.1f MiB  %s\n", tag, ppss[tag], (ppss[tag] < 32 ? "MET" : "NOT MET")
        }
        print "kept a/b: b = messages Postern answered 250 (calibration included), a = those in its spool after a clean stop + those the sink received"
    }' "$TSV"
echo
echo "all runs: $TSV"
} | tee "$TXT"
