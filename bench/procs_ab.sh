#!/usr/bin/env bash
# weftd with one P, with two, and with two and no adaptive limit (WEFTDEBUG=adaptprocs=0,
# runtime/internal/adapt.h), alternating, on docs/benchmarks.md's workloads. A
# diagnostic, not a figure of record: http_bench.sh always runs weftd with 2 Ps and its
# defaults, as its peers run with GOMAXPROCS=2 and 2 nginx workers.
#
# Why it exists: on this 2-core machine wrk takes about half a core, so two running Ps
# compete with the client for the cores, while one P leaves wrk a core of its own and the
# two work in parallel, server and client each on its own core. This measures how much
# that costs, alternating the two settings round by round so that a slow window of the
# host hits both alike.
#
#   bench/procs_ab.sh [BUILD_DIR]     SECS=4 per run, ROUNDS=4, WORKLOADS="sleep10 plaintext",
#                                     CONFIGS="p1 p2 p2fixed"
#
# Per round it prints `name value unit` lines, then the medians over the rounds and
# their ratios:
#   <config>_<workload>_rps       wrk's requests/sec; p1: --max-procs 1, p2: --max-procs 2,
#                                 p2fixed: --max-procs 2 with WEFTDEBUG=adaptprocs=0
#   p1_over_p2_<workload>         median(p1) / median(p2)
#   p2_over_p2fixed_<workload>    median(p2) / median(p2fixed): what the adaptive limit gives
# Workloads: sleep10 (wrk -t1 -c1000 /sleep?ms=10), plaintext (-c50 /hello), json (-c50
# /json), pipelined (-c50 /hello, 16 requests a batch).
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/release}
secs=${SECS:-4}
rounds=${ROUNDS:-4}
workloads=${WORKLOADS:-sleep10 plaintext}
configs=${CONFIGS:-p1 p2 p2fixed}
. bench/common.sh
weftd=$build/server/weftd
[ -x "$weftd" ] || { echo "no $weftd: build first (make build)" >&2; exit 1; }
url=http://127.0.0.1:18080

wrk_args() {  # WORKLOAD: wrk's arguments for it
  case $1 in
    sleep10) echo "-c1000 $url/sleep?ms=10" ;;
    plaintext) echo "-c50 $url/hello" ;;
    json) echo "-c50 $url/json" ;;
    pipelined) echo "-c50 -s bench/pipeline.lua $url/hello" ;;
    *) echo "unknown workload $1 (sleep10, plaintext, json, pipelined)" >&2; return 1 ;;
  esac
}

for wl in $workloads; do wrk_args "$wl" > /dev/null || exit 1; done
for c in $configs; do
  case $c in p1 | p2 | p2fixed) ;; *) echo "unknown config $c (p1, p2, p2fixed)" >&2; exit 1 ;; esac
done
echo "# procs_ab: $(nproc) CPUs; weftd configs $configs, alternating; wrk -t1, ${secs}s per run, $rounds round(s)"
for r in $(seq 1 "$rounds"); do
  for wl in $workloads; do
    for c in $configs; do
      procs=${c:1:1}
      debug=${WEFTDEBUG:-}
      [ "$c" = p2fixed ] && debug=adaptprocs=0
      WEFTDEBUG=$debug "$weftd" --listen 127.0.0.1:18080 --max-procs "$procs" --access-log off --log-level warn &
      pid=$!
      wait_up "$url/healthz" || exit 1
      # shellcheck disable=SC2046
      wrk -t1 -d1s $(wrk_args "$wl") > /dev/null 2>&1  # warm up
      # shellcheck disable=SC2046
      rps=$(wrk -t1 -d"${secs}s" $(wrk_args "$wl") 2>&1 | awk '/Requests\/sec/ { print $2 }')
      kill -TERM $pid; wait $pid 2> /dev/null
      echo "${c}_${wl}_rps ${rps:-0} req/s" | tee -a "$out/round$r"
    done
  done
done
median_figures "$out"/round* > "$out/medians"
echo "# medians of $rounds round(s)"
cat "$out/medians"
ratio() {  # A B WORKLOAD
  awk -v a="$1" -v b="$2" -v w="$3" '$1 == a "_" w "_rps" { x = $2 } $1 == b "_" w "_rps" { y = $2 }
    END { if (x > 0 && y > 0) printf "%s_over_%s_%s %.2f ratio\n", a, b, w, x / y }' "$out/medians"
}
for wl in $workloads; do
  ratio p1 p2 "$wl"
  ratio p2 p2fixed "$wl"
done
