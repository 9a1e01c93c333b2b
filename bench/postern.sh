# Sourced by the bench scripts, from the repository's root. `postern_toml DIR
# HOSTNAME` prints what every benchmarked Postern's config starts with: its
# data in DIR/data, one mta listener on a free loopback port (written to
# data_dir/run/listeners.json), clients on 127.0.0.1 trusted to relay, and
# room for the benchmark's sessions from there. The script appends the rest.
postern_toml() {
  cat << TOML
hostname = "$2"
data_dir = "$1/data"
trusted_networks = ["127.0.0.1/32"]

[[listener]]
addr = "127.0.0.1:0"
role = "mta"

[limits]
max_connections = 1000
max_connections_per_ip = 200
shutdown_grace = 2
TOML
}
