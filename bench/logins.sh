#!/usr/bin/env bash
# bench/logins.sh — connections per second when every connection does TLS +
# AUTH + one message (issue #11 item 4: phones and scripts), Postern against
# Postfix with Dovecot SASL, in the same run.
#
# WHAT IS MEASURED
#   bench/login-client.py: CLIENTS processes connect one connection after the
#   other for RUN_SECONDS; each connection does TLS (STARTTLS on a submission
#   listener, or implicit TLS on a submissions one), EHLO, AUTH PLAIN, MAIL,
#   RCPT, DATA (1 KiB) and QUIT. The figure is messages accepted (250 after
#   DATA) per second, from the moment every client process is ready until the
#   last connection ends (a fixed time, not a fixed count: the servers differ
#   twentyfold, and short runs on a shared machine are all noise). Each client
#   process is its own account (user0..userN@example.com), so each one's
#   first login is a full check and the cache can only help its later ones.
#   With ":resume" in a scenario each client offers its previous TLS session
#   (a client that reconnects); otherwise every handshake is a full one.
#
#   Four servers, interleaved run by run so drift hits all alike:
#     postfix     Postfix 3.7 (Debian) + Dovecot 2.3 SASL (Debian), Dovecot as
#                 Debian ships it: passwd-file with scheme CRYPT, hashes made by
#                 `doveadm pw` (its default: {CRYPT}$2y$05$, bcrypt cost 5),
#                 auth_cache_size = 0 (off)
#     pf+cache    the same Postfix through a second Dovecot with
#                 auth_cache_size = 10M (auth_cache_ttl: its default, 1 hour)
#     pt-nocache  Postern with [auth] cache_ttl = 0: argon2id on every login
#     postern     Postern with its defaults ([auth] cache_ttl = 300)
#   Postern stores argon2id hashes (the default parameters of the argon2
#   crate: 19 MiB, 2 passes). Both servers use the same ECDSA P-256
#   certificate; both keep what they accept (Postern `[delivery] hold = true`,
#   Postfix HOLD at end of data), each synced before its 250. At the end the
#   script stops every server and counts: every 250 must be a message in
#   Postern's spool (`postern queue list --json`) or in Postfix's hold queue.
#
#   Postern's submission listeners wait `[smtp] tls_detect_ms` (300 ms) for a
#   ClientHello before greeting a client that waits for the greeting (see the
#   README, "Any port, any mode"); a network whose clients said EHLO in
#   plaintext within the last day gets 10 ms, so only each run's first
#   STARTTLS connection from 127.0.0.1 waits the whole 300 ms. TLS_DETECT_MS
#   sets the key for both Postern instances (e.g. 0, to see the login path
#   alone).
#
# USAGE (as root: installs postfix through /work/shared/bench/peers-setup.sh
#        and dovecot-core with apt when missing)
#   bench/logins.sh
#   SCENARIOS="ssl:8 starttls:8:resume" RUNS=1 bench/logins.sh
#   environment:
#     POSTERN_BIN / POSTERN_REV   as for the other scripts (bench/binary.sh)
#     SCENARIOS   mode:clients[:resume] ... (default below)
#     RUNS=3  RUN_SECONDS=10
#     TLS_DETECT_MS   [smtp] tls_detect_ms for Postern (default: its default)
#     BENCH_WORKDIR=/var/tmp   never a tmpfs (queues sync to disk)
#   Results: bench/results/logins-<time>.tsv (every run) and .txt (the table).
#
# Nothing leaves loopback: Postern and Postfix listen on 127.0.0.1 only
# (Postfix on 10587/10465 and 10588/10466), and keep every message. Everything
# the script starts it stops by PID: both Posterns, both Dovecots, and the
# Postfix instance (its own config and queue in the work dir; the Postfix of
# peers-setup.sh is neither used nor touched).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

SCENARIOS=${SCENARIOS:-"starttls:1 starttls:8 starttls:32 ssl:1 ssl:8 ssl:32 starttls:8:resume ssl:8:resume"}
RUNS=${RUNS:-3}
RUN_SECONDS=${RUN_SECONDS:-10}
PEER_BENCH_DIR=${PEER_BENCH_DIR:-/work/shared/bench}
PASSWORD="login bench password"
SERVERS="postfix pf+cache pt-nocache postern"

die() { echo "logins.sh: $*" >&2; exit 1; }
log() { echo "# $*" >&2; }
[ "$(id -u)" = 0 ] || die "run as root (Postfix and Dovecot run as their own users)"

MAX_CLIENTS=0
for s in $SCENARIOS; do
    IFS=: read -r mode c extra <<< "$s"
    case "$mode" in starttls|ssl) ;; *) die "scenario $s: mode must be starttls or ssl" ;; esac
    case "${extra:-}" in ""|resume) ;; *) die "scenario $s: the third part may only be 'resume'" ;; esac
    [ "$c" -ge 1 ] 2>/dev/null || die "scenario $s: clients must be a number"
    [ "$c" -gt "$MAX_CLIENTS" ] && MAX_CLIENTS=$c
done

command -v postfix >/dev/null || "$PEER_BENCH_DIR/peers-setup.sh" install >&2
command -v dovecot >/dev/null || {
    log "installing dovecot-core"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q dovecot-core >&2
}

. bench/binary.sh

PARENT=${BENCH_WORKDIR:-/var/tmp}
[ "$(stat -f -c %T "$PARENT")" != tmpfs ] || die "$PARENT is a tmpfs; set BENCH_WORKDIR to a directory on disk"
WORK=$(mktemp -d "$PARENT/postern-logins.XXXXXX")
chmod 755 "$WORK"
PF=$WORK/postfix
POSTERN_PIDS=""
DOVECOT_PIDS=""
POSTFIX_UP=0

stop_pid() { # pid: TERM, wait up to 10 s, then KILL
    kill -TERM "$1" 2>/dev/null || return 0
    local i
    for i in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    log "pid $1 did not exit on TERM; sending KILL"
    kill -KILL "$1" 2>/dev/null || true
}
stop_all() {
    local p
    for p in $POSTERN_PIDS $DOVECOT_PIDS; do stop_pid "$p"; done
    POSTERN_PIDS=""; DOVECOT_PIDS=""
    if [ "$POSTFIX_UP" = 1 ]; then
        postfix -c "$PF/etc" stop >/dev/null 2>&1 || true
        p=$(tr -dc 0-9 < "$PF/queue/pid/master.pid" 2>/dev/null || true)
        for _ in $(seq 100); do [ -n "$p" ] && kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        POSTFIX_UP=0
    fi
}
trap 'rc=$?; stop_all; rm -rf "$WORK"; exit $rc' EXIT
trap 'exit 130' INT TERM

log "work dir $WORK; postern: $bin"

# ---- one certificate for both, the kind Postern generates (ECDSA P-256) --------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=bench.postern.test -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
chmod 644 "$WORK/cert.pem"

# ---- Dovecot: two auth-only instances, Debian's defaults but the cache ----------
mkdir -p "$PF/queue/private"
chown postfix "$PF/queue/private"; chmod 700 "$PF/queue/private"   # as Postfix makes it
: > "$WORK/users"
for i in $(seq 0 $((MAX_CLIENTS - 1))); do
    echo "user$i@example.com:$(doveadm pw -p "$PASSWORD"):65534:65534::/nonexistent::" >> "$WORK/users"
done
chmod 644 "$WORK/users"
SCHEME=$(sed -n '1s/^[^:]*:\({[A-Z-]*}\$[^$]*\$[^$]*\$\).*/\1/p' "$WORK/users")
start_dovecot() { # name cache_size
    local d=$WORK/dovecot-$1
    mkdir -p "$d"
    cat > "$d/dovecot.conf" <<EOF
# written by bench/logins.sh: SASL for Postfix only
base_dir = $d/run
state_dir = $d/state
protocols =
log_path = $d/dovecot.log
ssl = no
auth_mechanisms = plain login
auth_cache_size = $2
passdb {
  driver = passwd-file
  args = scheme=CRYPT username_format=%u $WORK/users
}
userdb {
  driver = passwd-file
  args = username_format=%u $WORK/users
}
service auth {
  unix_listener $PF/queue/private/auth-$1 {
    mode = 0660
    user = postfix
    group = postfix
  }
}
EOF
    dovecot -c "$d/dovecot.conf" || die "dovecot $1 did not start: $(tail -3 "$d/dovecot.log")"
    local i
    for i in $(seq 50); do [ -s "$d/run/master.pid" ] && break; sleep 0.1; done
    DOVECOT_PIDS="$DOVECOT_PIDS $(cat "$d/run/master.pid")"
}
start_dovecot default 0
start_dovecot cache 10M

# ---- Postfix: its own instance in the work dir ------------------------------------
mkdir -p "$PF/etc" "$PF/data"
chown postfix "$PF/data"
cat > "$PF/etc/main.cf" <<EOF
# written by bench/logins.sh: submission with Dovecot SASL; every message held
compatibility_level = 3.6
queue_directory = $PF/queue
data_directory = $PF/data
maillog_file = $PF/postfix.log
myhostname = bench.postern.test
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.1/32
smtp_dns_support_level = disabled
# Everything is held (below); should a message ever leave the hold queue it
# would only be deferred against a closed loopback port.
relayhost = [127.0.0.1]:9
smtpd_tls_chain_files = $WORK/key.pem, $WORK/cert.pem
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
smtpd_end_of_data_restrictions = check_client_access static:HOLD
biff = no
EOF
# The stock master.cf without its inet services and chroot, plus ours.
awk '/^[^#[:space:]]/ { if ($2 == "inet") next; if (NF >= 8 && $5 == "y") $5 = "n" } { print }' \
    /usr/share/postfix/master.cf.dist > "$PF/etc/master.cf"
for svc in "10587 default no" "10465 default yes" "10588 cache no" "10466 cache yes"; do
    read -r port auth wrap <<< "$svc"
    echo "127.0.0.1:$port inet n - n - - smtpd -o smtpd_tls_security_level=encrypt -o smtpd_tls_wrappermode=$wrap -o smtpd_sasl_path=private/auth-$auth" >> "$PF/etc/master.cf"
done
postfix -c "$PF/etc" check >&2 || die "postfix check failed"
postfix -c "$PF/etc" start >&2 || die "postfix did not start: $(tail -3 "$PF/postfix.log" 2>/dev/null)"
POSTFIX_UP=1

# ---- Postern: cache off and defaults ----------------------------------------------
declare -A PORT   # server,mode -> port
start_postern() { # name cache_ttl
    local d=$WORK/$1
    mkdir -p "$d"
    cat > "$d/postern.toml" <<EOF
# written by bench/logins.sh
hostname = "bench.postern.test"
data_dir = "$d/data"
[[listener]]
addr = "127.0.0.1:0"
role = "submission"
[[listener]]
addr = "127.0.0.1:0"
role = "submissions"
[tls]
cert = "$WORK/cert.pem"
key = "$WORK/key.pem"
[limits]
max_connections = 1000
max_connections_per_ip = 200
shutdown_grace = 2
# A benchmark's users send far more than a person: neither the sending
# limits nor the hold on a burst are what is measured.
messages_per_hour_per_user = 10000000
recipients_per_day_per_user = 100000000
hold_on_burst = false
[auth]
cache_ttl = $2
[delivery]
hold = true
$( [ -n "${TLS_DETECT_MS:-}" ] && printf '[smtp]\ntls_detect_ms = %s\n' "$TLS_DETECT_MS" )
EOF
    "$bin" domain add example.com --config "$d/postern.toml" > /dev/null
    local i
    for i in $(seq 0 $((MAX_CLIENTS - 1))); do
        printf '%s' "$PASSWORD" | "$bin" user add "user$i@example.com" --password-stdin --config "$d/postern.toml" > /dev/null
    done
    "$bin" serve --config "$d/postern.toml" > "$d/postern.log" 2>&1 < /dev/null &
    POSTERN_PIDS="$POSTERN_PIDS $!"
    for i in $(seq 100); do [ -s "$d/data/run/listeners.json" ] && break; sleep 0.1; done
    [ -s "$d/data/run/listeners.json" ] || die "postern $1 did not start: $(tail -3 "$d/postern.log")"
    PORT[$1,starttls]=$(python3 -c 'import json,sys; print(next(l["addr"] for l in json.load(open(sys.argv[1])) if l["role"] == "submission").rsplit(":", 1)[1])' "$d/data/run/listeners.json")
    PORT[$1,ssl]=$(python3 -c 'import json,sys; print(next(l["addr"] for l in json.load(open(sys.argv[1])) if l["role"] == "submissions").rsplit(":", 1)[1])' "$d/data/run/listeners.json")
}
start_postern pt-nocache 0
start_postern postern 300
PORT[postfix,starttls]=10587; PORT[postfix,ssl]=10465
PORT[pf+cache,starttls]=10588; PORT[pf+cache,ssl]=10466
for srv in $SERVERS; do for mode in starttls ssl; do
    (exec 3<>"/dev/tcp/127.0.0.1/${PORT[$srv,$mode]}") 2>/dev/null || die "$srv does not listen on ${PORT[$srv,$mode]}"
done; done

# ---- the runs ------------------------------------------------------------------------
mkdir -p bench/results
STAMP=$(date +%Y%m%d-%H%M%S)
TSV=bench/results/logins-$STAMP.tsv
TXT=bench/results/logins-$STAMP.txt
printf '#scenario\trun\tserver\tconnections\taccepted\terrors\tseconds\trate\tresumed\tfirst_error\n' > "$TSV"
T0=$SECONDS
for s in $SCENARIOS; do
    IFS=: read -r mode c extra <<< "$s"
    for run in $(seq "$RUNS"); do
        for srv in $SERVERS; do
            out=$(python3 bench/login-client.py 127.0.0.1 "${PORT[$srv,$mode]}" "$mode" "$c" "$RUN_SECONDS" \
                'user{i}@example.com' "$PASSWORD" ${extra:+--resume}) || out="0 0 0 0 0 0 client-failed"
            read -r conns acc errs secs rate resumed first <<< "$out"
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$run" "$srv" "$conns" "$acc" "$errs" \
                "$secs" "$rate" "$resumed" "$first" | tee -a "$TSV" >&2
        done
    done
done
ELAPSED=$((SECONDS - T0))

# ---- count what was kept ---------------------------------------------------------------
stop_all
declare -A KEPT
for srv in pt-nocache postern; do
    KEPT[$srv]=$("$bin" queue list --json --config "$WORK/$srv/postern.toml" | { grep -o '"id"' || true; } | wc -l)
done
KEPT[postfix]=$(find "$PF/queue/hold" -type f | wc -l)
ELSEWHERE=$(find "$PF/queue/incoming" "$PF/queue/active" "$PF/queue/deferred" "$PF/queue/maildrop" -type f 2>/dev/null | wc -l)
[ "$ELSEWHERE" = 0 ] || log "postfix has $ELSEWHERE message(s) outside its hold queue"

# ---- the table -----------------------------------------------------------------------
{
echo "Logins: messages/s, each connection TLS + AUTH PLAIN + one 1 KiB message (median of $RUNS runs of ${RUN_SECONDS}s)"
echo "postern: $bin ($(git rev-parse --short HEAD 2>/dev/null)${POSTERN_REV:+, built from $POSTERN_REV})"
echo "postfix $(postconf -h mail_version) + dovecot $(dovecot --version | cut -d' ' -f1), passwd-file scheme CRYPT, $SCHEME hashes (doveadm pw default)"
echo "postern tls_detect_ms: ${TLS_DETECT_MS:-default (300)}; host: $(nproc) cores, $(uname -r); ${ELAPSED}s; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
awk -F'\t' -v kept_pt="${KEPT[postern]}" -v kept_ptn="${KEPT[pt-nocache]}" -v kept_pf="${KEPT[postfix]}" '
    /^#/ { next }
    {
        if (!($1 in seen)) { seen[$1] = 1; order[++ns] = $1 }
        k = ++cnt[$1, $3]; rate[$1, $3, k] = $8 + 0; errs[$1, $3] += $6
        res[$1, $3] += $9; conns[$1, $3] += $4
        acc[$3 == "pf+cache" ? "postfix" : $3] += $5
    }
    function med(sc, srv,   n, i, j, a, t) {
        n = cnt[sc, srv]
        for (i = 1; i <= n; i++) a[i] = rate[sc, srv, i]
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n == 0 ? 0 : (n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2)
    }
    function ratio(a, b) { return b > 0 ? sprintf("%.2fx", a / b) : "-" }
    END {
        printf "%-18s | %8s %8s | %10s %8s | %9s %9s %9s | %s\n", "scenario",
            "postfix", "pf+cache", "pt-nocache", "postern", "/postfix", "/pf+cache", "/nocache", "notes"
        for (i = 1; i <= ns; i++) {
            sc = order[i]; note = ""
            for (s = 1; s <= 4; s++) {
                srv = (s == 1 ? "postfix" : s == 2 ? "pf+cache" : s == 3 ? "pt-nocache" : "postern")
                m[srv] = med(sc, srv)
                if (errs[sc, srv] > 0) note = note sprintf("%s errors %d; ", srv, errs[sc, srv])
                if (sc ~ /:resume$/) note = note sprintf("%s %d%% resumed; ", srv, 100 * res[sc, srv] / conns[sc, srv])
            }
            printf "%-18s | %8.1f %8.1f | %10.1f %8.1f | %9s %9s %9s | %s\n", sc,
                m["postfix"], m["pf+cache"], m["pt-nocache"], m["postern"],
                ratio(m["postern"], m["postfix"]), ratio(m["postern"], m["pf+cache"]),
                ratio(m["postern"], m["pt-nocache"]), note
        }
        print ""
        printf "kept after a clean stop: postern %d/%d%s, pt-nocache %d/%d%s, postfix (both Dovecots) %d/%d%s\n",
            kept_pt, acc["postern"], (kept_pt == acc["postern"] ? " ok" : " MISMATCH"),
            kept_ptn, acc["pt-nocache"], (kept_ptn == acc["pt-nocache"] ? " ok" : " MISMATCH"),
            kept_pf, acc["postfix"], (kept_pf == acc["postfix"] ? " ok" : " MISMATCH")
    }' "$TSV"
echo
echo "all runs: $TSV"
} | tee "$TXT"
