#!/usr/bin/env bash
# HTTP benchmarks (docs/benchmarks.md): weftd, the Go net/http peer and nginx, one after
# another in this one invocation, each with 2 worker threads; wrk -t1 on the same
# machine. Prints every figure per server as `server name value unit`, then the ratios.
# Right after weft's sleep10_rps, bench/sleep_floor's (a server that only waits): the
# machine's own limit for that figure at that time, and `ratio sleep10_rps weft/floor`.
#
#   bench/http_bench.sh [BUILD_DIR]      SECS=10 per figure (default), IDLE_CONNS=10000,
#                                        ROUNDS=1
#
# With ROUNDS > 1 the three servers run in turn ROUNDS times (fresh processes each
# round) and every figure is the median of its rounds, as run_benchmarks.sh and
# echo_bench.sh do: on a shared machine one 10 s window can catch a slow phase that
# halves a figure.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/release}
secs=${SECS:-10}
idle_n=${IDLE_CONNS:-10000}
rounds=${ROUNDS:-1}
. bench/common.sh
go_peer go_http || exit 1

wrk_rps() {  # args...: prints requests/sec, and p99 (ms) to $out/p99
  local o
  o=$(wrk "$@" 2>&1)
  echo "$o" | awk '/Requests\/sec/ { print $2 }'
  local p99
  p99=$(echo "$o" | awk '$1 == "99%" { print $2 }')
  [ -n "$p99" ] && to_ms "$p99" > "$out/p99"
  if echo "$o" | grep -qE "Socket errors|Non-2xx"; then echo "$o" | grep -E "Socket errors|Non-2xx" | sed 's/^/# /' >&2; fi
}

syscalls_per_req() {  # PIDS(comma separated) URL
  local reqs pids
  pids=$(echo "$1" | tr ',' '\n' | sed 's/^/-p /' | tr '\n' ' ')
  strace -f -c $pids -o "$out/strace" 2>/dev/null &
  local st=$!
  sleep 0.5
  reqs=$(wrk -t1 -c50 -d3s "$2" 2>&1 | awk '/requests in/ { print $1 }')
  kill -INT $st; wait $st 2>/dev/null
  local calls
  calls=$(awk '/total$/ { print $(NF-2) }' "$out/strace")
  awk -v c="$calls" -v r="$reqs" 'BEGIN { if (r > 0) printf "%.2f", c / r; else print "0" }'
}

bench_server() {  # NAME PIDS(comma separated) BASE_URL HAS_SLEEP
  local name=$1 pid=$2 url=$3 has_sleep=$4 v
  wait_up "$url/hello" || return
  # First, on a fresh process: memory per idle keep-alive connection.
  v=$("$build/bench/idle_conns" --addr "${url#http://}" --pids "$pid" --conns "$idle_n" | awk '{ print $2 }')
  echo "$name idle_conn_bytes $v B"
  wrk -t1 -c50 -d1s "$url/hello" > /dev/null 2>&1  # warm up
  v=$(wrk_rps -t1 -c50 -d${secs}s --latency "$url/hello"); echo "$name plaintext_rps $v req/s"
  echo "$name p99_ms $(cat "$out/p99") ms"
  v=$(wrk_rps -t1 -c50 -d${secs}s -s bench/pipeline.lua "$url/hello"); echo "$name pipelined_rps $v req/s"
  v=$(wrk_rps -t1 -c50 -d${secs}s "$url/json"); echo "$name json_rps $v req/s"
  if [ "$has_sleep" = 1 ]; then
    v=$(wrk_rps -t1 -c1000 -d${secs}s "$url/sleep?ms=10"); echo "$name sleep10_rps $v req/s"
    if [ "$name" = weft ]; then
      # The machine's own limit for this figure, right after it (bench/sleep_floor.cc).
      v=$(floor_rps "$secs")
      { [ -n "$v" ] && echo "floor sleep10_rps $v req/s"; } > "$out/floor.$r"
    fi
  fi
  echo "$name syscalls_per_req $(syscalls_per_req "$pid" "$url/hello") calls"
}

{
  echo "# http: $(nproc) CPUs; weftd (2 Ps), Go $(go env GOVERSION) net/http (GOMAXPROCS=2), nginx $(nginx -v 2>&1 | sed 's/.*\///') (2 workers); wrk -t1, ${secs}s per figure, median of $rounds round(s)"

  for r in $(seq "$rounds"); do
    WEFT_MAXPROCS=2 "$build/server/weftd" --listen 127.0.0.1:18080 --max-procs 2 --access-log off --log-level warn &
    pid=$!
    bench_server weft $pid http://127.0.0.1:18080 1 > "$out/weft.$r"
    kill -TERM $pid; wait $pid 2>/dev/null

    GOMAXPROCS=2 "$build/peers/go_http" -listen 127.0.0.1:18081 2>/dev/null &
    pid=$!
    bench_server go $pid http://127.0.0.1:18081 1 > "$out/go.$r"
    kill $pid; wait $pid 2>/dev/null

    mkdir -p "$out/nginx"
    sed -e "s|@PREFIX@|$out/nginx|g" -e "s|@PORT@|18082|g" bench/peers/nginx/nginx.conf.in > "$out/nginx/nginx.conf"
    nginx -c "$out/nginx/nginx.conf" -p "$out/nginx" -g 'daemon off;' &
    pid=$!
    sleep 0.3
    # The workers do the work: measure and trace all of them.
    bench_server nginx "$(pgrep -P $pid | paste -sd,)" http://127.0.0.1:18082 0 > "$out/nginx.$r"
    kill -QUIT $pid; wait $pid 2>/dev/null
    [ "$rounds" -gt 1 ] && cat "$out/weft.$r" "$out/go.$r" "$out/nginx.$r" "$out/floor.$r" | sed "s/^/# round $r: /"
  done

  for name in weft go nginx floor; do
    # `server figure value unit` -> the median of each figure over the rounds.
    for r in $(seq "$rounds"); do cut -d' ' -f2- "$out/$name.$r" > "$out/$name.figs.$r"; done
    median_figures "$out"/$name.figs.[0-9]* | sed "s/^/$name /" | tee "$out/$name.med"
  done

  for peer in go nginx floor; do
    label=weft/$peer
    awk -v label="$label" 'NR==FNR { a[$2] = $3; next }
      ($2 in a) && $3 > 0 && a[$2] != "" { printf "ratio %s %s %.2f\n", $2, label, a[$2] / $3 }' "$out/weft.med" "$out/$peer.med"
  done
}
