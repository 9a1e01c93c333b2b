#!/usr/bin/env bash
# Installs Postern on a Debian host: the binary, the `postern` account, the
# configuration (from postern.example.toml, kept if one exists), data_dir, the
# manual page and the systemd unit; then checks the configuration and, where
# systemd runs, starts the service. Run as root from the source tree:
#
#   sudo dist/install.sh                 # builds the release binary first
#   sudo dist/install.sh --binary PATH   # installs a binary built elsewhere
#   options: --no-start (install only), --sendmail (link /usr/sbin/sendmail
#   to postern when no other MTA owns it), --hostname NAME (for a new config)
#
# PREFIX (default /usr/local), CONFIG_DIR (default /etc/postern) and DATA_DIR
# (default /var/lib/postern, the unit's StateDirectory) move the files;
# UNIT_DIR (default /etc/systemd/system) the unit.
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=${PREFIX:-/usr/local}
config_dir=${CONFIG_DIR:-/etc/postern}
data_dir=${DATA_DIR:-/var/lib/postern}
unit_dir=${UNIT_DIR:-/etc/systemd/system}
binary="" start=1 sendmail=0 host=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --no-start) start=0; shift ;;
    --sendmail) sendmail=1; shift ;;
    --hostname) host=$2; shift 2 ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "install.sh: run it as root" >&2; exit 1; }

if [ -z "$binary" ]; then
  cargo build --release --locked
  binary=target/release/postern
fi
install -D -m 0755 "$binary" "$prefix/bin/postern"
postern=$prefix/bin/postern

# The account the server runs as: no login, no home of its own beyond data_dir.
getent group postern >/dev/null || groupadd --system postern
id -u postern >/dev/null 2>&1 ||
  useradd --system --gid postern --home-dir "$data_dir" --no-create-home \
    --shell /usr/sbin/nologin --comment "Postern mail server" postern
install -d -o postern -g postern -m 0751 "$data_dir"

# The configuration is root's and readable by all, as Postfix's main.cf: the
# server reads it again on reload after it gave up root, and `postern
# sendmail` reads it as whichever user runs it (PHP as www-data). Secrets do
# not go in it: relay passwords are in password_file, keys in their files.
install -d -m 0755 "$config_dir"
if [ ! -e "$config_dir/postern.toml" ]; then
  host=${host:-$(hostname -f 2>/dev/null || hostname)}
  sed -e "s/^hostname = .*/hostname = \"$host\"/" \
      -e "s|^data_dir = .*|data_dir = \"$data_dir\"|" \
      postern.example.toml > "$config_dir/postern.toml"
  chmod 0644 "$config_dir/postern.toml"
  echo "install.sh: wrote $config_dir/postern.toml for $host; edit it, then: postern config check"
fi
"$postern" config check --config "$config_dir/postern.toml"

install -d -m 0755 "$prefix/share/man/man8"
"$postern" manpage > "$prefix/share/man/man8/postern.8"

if [ "$sendmail" = 1 ]; then
  if [ -e /usr/sbin/sendmail ] && [ "$(readlink -f /usr/sbin/sendmail)" != "$(readlink -f "$postern")" ]; then
    echo "install.sh: /usr/sbin/sendmail belongs to another program; left alone" >&2
  else
    ln -sf "$postern" /usr/sbin/sendmail
  fi
fi

install -d -m 0755 "$unit_dir"
sed -e "s|/usr/local/bin/postern|$postern|; s|/etc/postern/postern.toml|$config_dir/postern.toml|" \
    -e "s|=/var/lib/postern|=$data_dir|" \
  dist/postern.service > "$unit_dir/postern.service"
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  if [ "$start" = 1 ]; then
    systemctl enable --now postern
    systemctl --no-pager status postern | head -5
  fi
else
  echo "install.sh: systemd is not running here; start the server as root with" \
       "'$postern serve' (it binds its ports, then runs as postern)"
fi
