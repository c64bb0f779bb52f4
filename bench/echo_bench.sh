#!/usr/bin/env bash
# The echo benchmarks (docs/benchmarks.md): weft's echo_server and the Go peer in turn,
# ROUNDS times alternating, the same client (bench/echo_bench) against both; prints the
# median of every figure per server, then the ratios weft/go. The *_rps_per_core figures
# are the same work per second of the server's own CPU time (the client shares the two
# cores, so the rps figures carry its cost too).
#
#   bench/echo_bench.sh [BUILD_DIR]      SECS=5 per figure, ROUNDS=3
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/release}
secs=${SECS:-5}
rounds=${ROUNDS:-3}
. bench/common.sh
go_peer go_echo || exit 1

run_one() {  # NAME PORT COMMAND...
  local name=$1 port=$2; shift 2
  "$@" > "$out/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 200); do grep -q "listening on" "$out/$name.log" && break; sleep 0.05; done
  WEFT_MAXPROCS=2 "$build/bench/echo_bench" --addr "127.0.0.1:$port" --seconds "$secs" --server-pid $pid
  kill -TERM $pid; wait $pid 2>/dev/null
}

echo "# echo: weft echo_server (2 Ps) vs Go $(go env GOVERSION) (GOMAXPROCS=2), ${secs}s per figure, median of $rounds alternating rounds"
for r in $(seq "$rounds"); do
  run_one weft 19000 env WEFT_MAXPROCS=2 "$build/bench/echo_server" --listen 127.0.0.1:19000 > "$out/weft.$r"
  run_one go 19001 env GOMAXPROCS=2 "$build/peers/go_echo" -listen 127.0.0.1:19001 > "$out/go.$r"
done
median_figures "$out"/weft.[0-9]* > "$out/weft"
median_figures "$out"/go.[0-9]* > "$out/go"
sed 's/^/weft /' "$out/weft"
sed 's/^/go /' "$out/go"
ratios "$out/weft" "$out/go" weft/go
