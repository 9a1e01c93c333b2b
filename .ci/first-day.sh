#!/usr/bin/env bash
# The admin's first day, on this machine, as the README's "Installing" section
# tells it: install with dist/install.sh, start as root (the server binds its
# ports, then runs as postern), add a domain and a user, send with swaks, find
# the message delivered, replace the certificate and see it served without a
# restart, and SIGHUP a broken configuration while the server keeps serving.
#
# Everything lands under one temporary directory (PREFIX, CONFIG_DIR,
# DATA_DIR) except the `postern` system account, which is created as a real
# install would. The server runs in a network namespace of its own, so the
# example configuration's ports (25, 26, 587, 465, 80, 443 on every address)
# reach nothing outside this script. Needs root, ip, swaks and openssl.
# Usage: .ci/first-day.sh BINARY
set -euo pipefail
cd "$(dirname "$0")/.."
binary=$(readlink -f "$1")

root=$(mktemp -d /tmp/postern-first-day.XXXXXX)
chmod 0755 "$root"
ns=postern-first-day-$$
server_pid=""
cleanup() {
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
# The example configuration lets the host's own programs relay; the first day
# sends as a user, so that stays as it is.

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
