#!/usr/bin/env bash
# What profiling costs, weft next to Go, in one invocation.
#
# (1) CPU profiling at 100 Hz under the plaintext_rps load (docs/benchmarks.md): weftd
#     and the Go net/http peer in turn, each measured ROUNDS times alternating without
#     and with a /debug/pprof/profile running for the whole wrk window. Figures per
#     server: plaintext_rps_profiling_off, plaintext_rps_profiling_on (medians) and
#     cpu_profiling_rps_ratio = on / off (target for weft: >= 0.95).
# (2) /debug/pprof/goroutine with 100,000 goroutines: bench/pprof_bench against
#     bench/peers/go_pprof (debug=2, 1 and 0; the longest stall of a running goroutine).
#
#   bench/pprof_bench.sh [BUILD_DIR]      SECS=10 per wrk run (default), ROUNDS=3
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/release}
secs=${SECS:-10}
rounds=${ROUNDS:-3}
. bench/common.sh
go_peer go_http || exit 1
go_peer go_pprof || exit 1

rps() { wrk -t1 -c50 -d${secs}s "$1" 2>&1 | awk '/Requests\/sec/ { print $2 }'; }

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

profile_overhead() {  # NAME BASE_URL
  local name=$1 url=$2 r
  wait_up "$url/hello" || return
  wrk -t1 -c50 -d1s "$url/hello" > /dev/null 2>&1  # warm up
  for r in $(seq "$rounds"); do
    rps "$url/hello" >> "$out/$name.off"
    # The profile covers the whole wrk window: it starts first and ends after.
    curl -s -o "$out/$name.prof.$r" "$url/debug/pprof/profile?seconds=$((secs + 1))" &
    local c=$!
    sleep 0.3
    rps "$url/hello" >> "$out/$name.on"
    wait $c
    # A profile that pprof cannot read, or with no samples, makes the figure void.
    if ! go tool pprof -top "$out/$name.prof.$r" 2>/dev/null | grep -q "Total samples"; then
      echo "# $name: round $r: the CPU profile did not decode or has no samples" >&2
    fi
  done
  local off on
  off=$(median < "$out/$name.off")
  on=$(median < "$out/$name.on")
  echo "$name plaintext_rps_profiling_off $off req/s"
  echo "$name plaintext_rps_profiling_on $on req/s"
  awk -v a="$on" -v b="$off" -v n="$name" 'BEGIN { if (b > 0) printf "%s cpu_profiling_rps_ratio %.3f on/off\n", n, a / b }'
}

echo "# pprof: $(nproc) CPUs; weftd (2 Ps) and Go $(go env GOVERSION) net/http (GOMAXPROCS=2); wrk -t1 -c50, ${secs}s per run, median of $rounds alternating off/on rounds"
WEFT_MAXPROCS=2 "$build/server/weftd" --listen 127.0.0.1:18090 --max-procs 2 --access-log off --log-level warn &
pid=$!
profile_overhead weft http://127.0.0.1:18090
kill -TERM $pid; wait $pid 2>/dev/null

GOMAXPROCS=2 "$build/peers/go_http" -listen 127.0.0.1:18091 2>/dev/null &
pid=$!
profile_overhead go http://127.0.0.1:18091
kill $pid; wait $pid 2>/dev/null

echo "# goroutine profile with 100,000 goroutines: weft vs Go, each figure the median of 5 dumps"
WEFT_MAXPROCS=2 "$build/bench/pprof_bench" > "$out/dump.weft" || echo "# pprof_bench failed" >&2
GOMAXPROCS=2 "$build/peers/go_pprof" > "$out/dump.go" || echo "# go_pprof failed" >&2
sed 's/^/weft /' "$out/dump.weft"
sed 's/^/go /' "$out/dump.go"
ratios "$out/dump.weft" "$out/dump.go" weft/go
