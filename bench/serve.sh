# Sourced by the bench scripts, after binary.sh: `start_postern CONFIG DIR`
# starts `$bin serve --config CONFIG` in the background, its stderr in
# DIR/server.log, waits for DIR/data/run/listeners.json (so the config's
# data_dir must be DIR/data), and sets $server to its PID and $port to the
# port of its first listener.
start_postern() {
  "$bin" serve --config "$1" 2>"$2/server.log" &
  server=$!
  for _ in $(seq 100); do [ -s "$2/data/run/listeners.json" ] && break; sleep 0.1; done
  port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["addr"].rsplit(":",1)[1])' "$2/data/run/listeners.json")
}
