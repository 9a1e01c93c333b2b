#!/usr/bin/env bash
# The admin's first day, on this machine, as the README's "Installing" section
# tells it: install with dist/install.sh, start as root (the server binds its
# ports, then runs as postern), add a domain and a user, send with swaks, find
# the message delivered, send with PHP's mail() as www-data through `postern
# sendmail`, replace the certificate and see it served without a restart, read
# the mail over IMAP with Dovecot configured as docs/dovecot.md says, and SIGHUP
# a broken configuration while the server keeps serving.
#
# Everything lands under one temporary directory (PREFIX, CONFIG_DIR,
# DATA_DIR) except the `postern` system account, which is created as a real
# install would. The server runs in a network namespace of its own, so the
# example configuration's ports (25, 26, 587, 465, 80, 443 on every address)
# reach nothing outside this script. Needs root, ip, swaks, openssl, php-cli,
# Dovecot (dovecot-imapd, dovecot-sqlite, dovecot-lmtpd) and python3.
# Usage: .ci/first-day.sh BINARY
set -euo pipefail
cd "$(dirname "$0")/.."
binary=$(readlink -f "$1")

root=$(mktemp -d /tmp/postern-first-day.XXXXXX)
chmod 0755 "$root"
ns=postern-first-day-$$
server_pid="" dovecot_pid=""
cleanup() {
  [ -n "$dovecot_pid" ] && kill "$dovecot_pid" 2>/dev/null && wait "$dovecot_pid" 2>/dev/null
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$root"
}
trap cleanup EXIT
fail() {
  echo "first-day: FAILED: $*" >&2
  echo "--- server log" >&2
  cat "$root/server.log" >&2 || true
  exit 1
}
step() { echo "first-day: $*"; }
in_ns() { ip netns exec "$ns" "$@"; }

ip netns add "$ns"
ip -n "$ns" link set lo up

step "install"
export PREFIX=$root/usr CONFIG_DIR=$root/etc/postern DATA_DIR=$root/var/lib/postern UNIT_DIR=$root/systemd
dist/install.sh --binary "$binary" --no-start --hostname mail.first-day.test
postern=$PREFIX/bin/postern
config=$CONFIG_DIR/postern.toml
[ -x "$postern" ] && [ -s "$PREFIX/share/man/man8/postern.8" ] && [ -s "$UNIT_DIR/postern.service" ] ||
  fail "install.sh did not place the binary, man page and unit"
id -u postern >/dev/null || fail "no postern account"
# The web server's user may send as its site's addresses (README: [[sendmail]]).
printf '\n[[sendmail]]\nunix_user = "www-data"\nsenders = ["*@first-day.test"]\n' >>"$config"

step "domain and user (as root: the command runs as postern)"
"$postern" --config "$config" domain add first-day.test >/dev/null
echo 's3cret-first-day' | "$postern" user add alice@first-day.test --password-stdin --config "$config"
[ "$(stat -c %U "$DATA_DIR/store.sqlite")" = postern ] || fail "the store is not postern's"

step "start as root"
# Not through in_ns: $! must be the server itself (ip netns exec execs it).
ip netns exec "$ns" "$postern" serve --config "$config" >"$root/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 150); do
  [ -s "$DATA_DIR/run/listeners.json" ] && break
  kill -0 "$server_pid" 2>/dev/null || fail "the server exited"
  sleep 0.2
done
[ -s "$DATA_DIR/run/listeners.json" ] || fail "the server did not start"
[ "$(awk '/^Uid:/ { print $3 }' "/proc/$server_pid/status")" = "$(id -u postern)" ] ||
  fail "the server still runs as root"

step "send with swaks on 587 (STARTTLS, AUTH)"
in_ns swaks --server 127.0.0.1:587 -tls --auth PLAIN --auth-user alice@first-day.test \
  --auth-password 's3cret-first-day' --from alice@first-day.test --to alice@first-day.test \
  --header 'Subject: first day' --body 'hello from the first day' >"$root/swaks.log" 2>&1 ||
  fail "swaks: $(tail -5 "$root/swaks.log")"
for _ in $(seq 100); do
  delivered=$(grep -rl 'hello from the first day' "$DATA_DIR/mail" 2>/dev/null || true)
  [ -n "$delivered" ] && break
  sleep 0.2
done
[ -n "$delivered" ] || fail "the message was not delivered to alice's Maildir"
[ "$(stat -c %U "$delivered")" = postern ] || fail "the delivered file is not postern's"

step "PHP mail() as www-data, through postern sendmail"
runuser -u www-data -- env POSTERN_CONFIG="$config" php -d "sendmail_path=$postern sendmail -t -i" -r \
  'exit(mail("alice@first-day.test", "from php", "hello from php", "From: web@first-day.test") ? 0 : 1);' \
  </dev/null >"$root/php.log" 2>&1 || fail "php mail(): $(cat "$root/php.log")"
for _ in $(seq 100); do
  grep -rqs 'hello from php' "$DATA_DIR/mail" && break
  sleep 0.2
done
grep -rqs 'hello from php' "$DATA_DIR/mail" || fail "PHP's message was not delivered"

served_subject() {
  in_ns openssl s_client -connect 127.0.0.1:465 -servername mail.first-day.test </dev/null 2>/dev/null |
    openssl x509 -noout -subject
}
step "replace the certificate, SIGHUP, see it served"
served_subject | grep -q 'CN *= *mail.first-day.test' || fail "not the generated certificate: $(served_subject)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 90 \
  -subj "/CN=renewed.first-day.test" -addext "subjectAltName=DNS:mail.first-day.test" \
  -keyout "$CONFIG_DIR/privkey.pem" -out "$CONFIG_DIR/fullchain.pem" 2>/dev/null
chgrp postern "$CONFIG_DIR/privkey.pem" && chmod 0640 "$CONFIG_DIR/privkey.pem"
printf '\n[tls]\ncert = "%s"\nkey = "%s"\n' "$CONFIG_DIR/fullchain.pem" "$CONFIG_DIR/privkey.pem" >>"$config"
"$postern" config check --config "$config" >/dev/null
kill -HUP "$server_pid"
for _ in $(seq 50); do
  served_subject | grep -q renewed.first-day.test && break
  sleep 0.2
done
served_subject | grep -q renewed.first-day.test || fail "the new certificate is not served: $(served_subject)"

step "Dovecot, set up as docs/dovecot.md says, serves both messages over IMAP"
# The two files of docs/dovecot.md, with this install's paths; Postern runs as
# postern here, so the mailboxes and the store reader are postern's (the doc's
# vmail and root), and Dovecot keeps its sockets and state in this directory.
doc_block() { awk -v head="# $1" '$0 == "```conf" { getline; on = ($0 ~ "^" head) } on && $0 == "```" { on = 0 } on' docs/dovecot.md; }
mkdir -p "$root/dovecot"
doc_block /etc/dovecot/dovecot.conf |
  sed -e "s|/var/lib/postern|$DATA_DIR|g; s|/etc/dovecot/postern-sql.conf.ext|$root/dovecot/sql.conf.ext|" \
      -e "s|/etc/postern/|$CONFIG_DIR/|g; s/vmail/postern/g; s/user = root/user = postern/" >"$root/dovecot/dovecot.conf"
cat >>"$root/dovecot/dovecot.conf" <<CONF
base_dir = $root/dovecot/run
state_dir = $root/dovecot/state
log_path = $root/dovecot/dovecot.log
listen = 127.0.0.1
first_valid_uid = $(id -u postern)
CONF
doc_block /etc/dovecot/postern-sql.conf.ext | sed "s|/var/lib/postern|$DATA_DIR|g" >"$root/dovecot/sql.conf.ext"
grep -q 'dovecot_users' "$root/dovecot/sql.conf.ext" || fail "docs/dovecot.md's SQL file was not found"
ip netns exec "$ns" dovecot -F -c "$root/dovecot/dovecot.conf" >"$root/dovecot/stdout.log" 2>&1 &
dovecot_pid=$!
imap_read() {
  in_ns python3 - "$@" <<'PY'
import imaplib, ssl, sys, time
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
for _ in range(100):
    try:
        imap = imaplib.IMAP4_SSL("127.0.0.1", 993, ssl_context=ctx)
        break
    except OSError:
        time.sleep(0.2)
imap.login("alice@first-day.test", "s3cret-first-day")
imap.select("INBOX")
_, found = imap.search(None, "ALL")
for n in found[0].split():
    _, data = imap.fetch(n, "(RFC822)")
    sys.stdout.write(data[0][1].decode(errors="replace"))
imap.logout()
PY
}
imap_read >"$root/imap.log" 2>&1 || fail "IMAP: $(tail -5 "$root/imap.log"; cat "$root/dovecot/dovecot.log")"
grep -q 'hello from the first day' "$root/imap.log" && grep -q 'hello from php' "$root/imap.log" ||
  fail "IMAP did not show both messages: $(cat "$root/imap.log")"
kill "$dovecot_pid"; wait "$dovecot_pid" 2>/dev/null || true; dovecot_pid=""

step "SIGHUP with a broken configuration keeps the server serving"
cp "$config" "$root/good.toml"
echo 'max_recipients = "many"' >>"$config"
kill -HUP "$server_pid"
for _ in $(seq 50); do
  grep -q reload_refused "$root/server.log" && break
  sleep 0.2
done
grep -q reload_refused "$root/server.log" || fail "the broken configuration was not refused"
kill -0 "$server_pid" || fail "the server stopped"
in_ns swaks --server 127.0.0.1:465 --tls-on-connect --auth PLAIN --auth-user alice@first-day.test \
  --auth-password 's3cret-first-day' --from alice@first-day.test --to alice@first-day.test \
  --body 'after the broken reload' >"$root/swaks.log" 2>&1 ||
  fail "no mail after the refused reload: $(tail -5 "$root/swaks.log")"
cp "$root/good.toml" "$config"

step "stop"
kill -TERM "$server_pid"
wait "$server_pid" || fail "the server did not stop cleanly"
server_pid=""
echo "first-day: ok"
