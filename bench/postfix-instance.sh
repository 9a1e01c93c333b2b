# Sourced by the bench scripts: `postfix_instance DIR PORT EXTRA` writes a
# Postfix instance of its own under DIR (config in DIR/conf, queue, data and
# log beside it), listening on 127.0.0.1:PORT, relaying for loopback clients
# and delivering nothing locally; EXTRA is appended to its main.cf (relayhost,
# DNS use, myhostname). Sets PF_CONF, for `postfix -c "$PF_CONF" start|stop`.
# The instance other benchmarks configure in /etc/postfix is left alone.
postfix_instance() {
  local dir=$1 port=$2 extra=$3
  PF_CONF=$dir/conf
  mkdir -p "$PF_CONF" "$dir/queue" "$dir/data"
  chown postfix "$dir/data"
  cat > "$PF_CONF/main.cf" << EOF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
mydestination =
relay_domains =
local_recipient_maps =
local_transport = error:local delivery disabled
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
smtputf8_enable = no
biff = no
maillog_file = $dir/postfix.log
$extra
EOF
  awk -v port="$port" '
    /^[^#[:space:]]/ {
      if ($1 == "smtp" && $2 == "inet") { $1 = "127.0.0.1:" port }
      if (NF >= 8 && $5 == "y") { $5 = "n" }
    }
    { print }' /usr/share/postfix/master.cf.dist > "$PF_CONF/master.cf"
  postfix -c "$PF_CONF" set-permissions > /dev/null 2>&1 || true
  postfix -c "$PF_CONF" check
}

# Messages still in the instance under DIR.
postfix_queued() { find "$1/queue/"{incoming,active,deferred,maildrop} -type f 2> /dev/null | wc -l; }
