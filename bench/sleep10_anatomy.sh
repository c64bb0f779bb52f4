#!/usr/bin/env bash
# Where one sleep10 cycle goes (docs/benchmarks.md's sleep10_rps workload, weftd only).
# With 1,000 connections each waiting 10 ms, a cycle of C ms gives 1000/C*1000 req/s;
# this splits C into what the server and the client take, and says how busy the
# machine was, so that a low sleep10_rps can be told from a slow machine.
#
#   bench/sleep10_anatomy.sh [BUILD_DIR]     SECS=5 (wrk window), ROUNDS=1, PROCS=2 (weftd's Ps)
#
# Per round it prints `name value unit` lines:
#   sleep10_rps          wrk's requests/sec
#   cycle_ms             1000 connections / rps: one request's whole round trip
#   wrk_latency_ms       wrk's mean latency (request written to response read)
#   server_ms            weftd's mean request duration (/metrics), parse to response sent
#   sched_latency_us     weftd's mean wait of a readied goroutine for its P (/metrics)
#   weftd_cpu_pct        weftd's CPU over 3 s in the middle of the window (100 = a core)
#   wrk_cpu_pct          wrk's, over the same 3 s
#   machine_idle_pct     the machine's idle share over those 3 s (100 = both cores idle)
#   machine_steal_pct    the share the hypervisor took from this VM's cores meanwhile
#   weftd_cpu_us_per_req weftd's CPU time per request over those 3 s
#   weftd_{user,kernel}_{instructions,cache_misses}_per_req
#                        perf's hardware counters per request over those 3 s, when perf
#                        is installed and may read them (not a dependency of the build)
#   floor_sleep10_rps    right after, the same wrk run against bench/sleep_floor (a
#                        server that only waits): what the machine allows at that time
#   runtime_sleep10_rps  then against bench/sleep_runtime (the weft runtime, no HTTP
#                        layer): floor -> runtime is the runtime's price, runtime ->
#                        sleep10_rps the HTTP layer's
# cycle_ms - wrk_latency_ms is wrk's own time between a response and its next request;
# wrk_latency_ms - server_ms is the kernel plus the server's wait before it starts a
# request; server_ms - 10 is the timer's lateness plus scheduling inside the server.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/release}
secs=${SECS:-5}
rounds=${ROUNDS:-1}
procs=${PROCS:-2}
. bench/common.sh
weftd=$build/server/weftd
[ -x "$weftd" ] || { echo "no $weftd: build first (make build)" >&2; exit 1; }
[ "$secs" -ge 5 ] || { echo "SECS must be at least 5 (the CPU sample takes 3 s from the 1st)" >&2; exit 1; }
url=http://127.0.0.1:18080

metric() {  # BODY NAME: the value of the sample line NAME
  echo "$1" | awk -v n="$2" 'index($0, n " ") == 1 { print $NF }'
}
cpu_ns() {  # PID: CPU time of all its threads so far, in ns (schedstat: exact, not ticks)
  cat /proc/"$1"/task/*/schedstat 2> /dev/null | awk '{ s += $1 } END { printf "%.0f\n", s }'
}
idle_total() {  # the machine's idle ticks, total ticks, and ticks stolen by the hypervisor
  awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print $5 + $6, t, $9 }' /proc/stat
}

for r in $(seq 1 "$rounds"); do
  "$weftd" --listen 127.0.0.1:18080 --max-procs "$procs" --access-log off --log-level warn &
  pid=$!
  wait_up "$url/healthz" || exit 1
  wrk -t1 -c50 -d1s "$url/hello" > /dev/null 2>&1  # warm up
  m0=$(curl -s "$url/metrics")
  wrk -t1 -c1000 -d"${secs}s" --latency "$url/sleep?ms=10" > "$out/wrk" 2>&1 &
  wpid=$!
  sleep 1
  w0=$(cpu_ns "$pid"); c0=$(cpu_ns "$wpid"); read -r i0 t0 s0 <<< "$(idle_total)"
  : > "$out/perf"
  if command -v perf > /dev/null; then
    perf stat -x, -e instructions:u,cache-misses:u,instructions:k,cache-misses:k -p "$pid" -o "$out/perf" -- sleep 3 > /dev/null 2>&1 || sleep 3
  else
    sleep 3
  fi
  w1=$(cpu_ns "$pid"); c1=$(cpu_ns "$wpid"); read -r i1 t1 s1 <<< "$(idle_total)"
  wait "$wpid"
  m1=$(curl -s "$url/metrics")
  kill "$pid"; wait "$pid" 2> /dev/null
  if grep -qE "Socket errors|Non-2xx" "$out/wrk"; then grep -E "Socket errors|Non-2xx" "$out/wrk" | sed 's/^/# /' >&2; fi
  rps=$(awk '/Requests\/sec/ { print $2 }' "$out/wrk")
  lat_ms=$(to_ms "$(awk '$1 == "Latency" { print $2; exit }' "$out/wrk")")
  hz=$(getconf CLK_TCK)
  python3 - "$rps" "$lat_ms" "$hz" "$w0" "$w1" "$c0" "$c1" "$i0" "$i1" "$t0" "$t1" "$s0" "$s1" \
    "$(metric "$m0" 'weft_http_request_duration_seconds_sum{route="GET /sleep"}')" \
    "$(metric "$m1" 'weft_http_request_duration_seconds_sum{route="GET /sleep"}')" \
    "$(metric "$m0" 'weft_http_request_duration_seconds_count{route="GET /sleep"}')" \
    "$(metric "$m1" 'weft_http_request_duration_seconds_count{route="GET /sleep"}')" \
    "$(metric "$m0" weft_sched_latency_seconds_sum)" "$(metric "$m1" weft_sched_latency_seconds_sum)" \
    "$(metric "$m0" weft_sched_latency_seconds_count)" "$(metric "$m1" weft_sched_latency_seconds_count)" <<'EOF'
import sys
a = sys.argv[1:]
rps, lat_ms, hz = float(a[0]), float(a[1]), float(a[2])
w0, w1, c0, c1, i0, i1, t0, t1, s0, s1 = map(float, a[3:13])
f = lambda s: float(s) if s else 0.0
ds, dc = f(a[14]) - f(a[13]), f(a[16]) - f(a[15])
ls, lc = f(a[18]) - f(a[17]), f(a[20]) - f(a[19])
secs = (t1 - t0) / hz / 2  # /proc/stat counts both CPUs
print(f"sleep10_rps {rps:.0f} req/s")
print(f"cycle_ms {1000 / rps * 1000:.3f} ms")
print(f"wrk_latency_ms {lat_ms:.2f} ms")
print(f"server_ms {ds / max(dc, 1) * 1000:.3f} ms")
print(f"sched_latency_us {ls / max(lc, 1) * 1e6:.1f} us")
print(f"weftd_cpu_pct {(w1 - w0) / 1e9 / secs * 100:.0f} %")
print(f"wrk_cpu_pct {(c1 - c0) / 1e9 / secs * 100:.0f} %")
print(f"machine_idle_pct {(i1 - i0) / (t1 - t0) * 100:.0f} %")
print(f"machine_steal_pct {(s1 - s0) / (t1 - t0) * 100:.1f} %")
print(f"weftd_cpu_us_per_req {(w1 - w0) / 1e3 / (rps * secs):.2f} us")
EOF
  # Hardware counters per request over the same 3 s (if perf may read them): unlike
  # CPU time, they hardly move between the machine's fast and slow phases.
  awk -F, -v n="$(awk -v r="$rps" 'BEGIN { print r * 3 }')" '
    $3 ~ /^(instructions|cache-misses):[uk]$/ && $1 ~ /^[0-9]+$/ {
      split($3, e, ":")
      printf "weftd_%s_%s_per_req %.0f count\n", e[2] == "u" ? "user" : "kernel", e[1] == "instructions" ? "instructions" : "cache_misses", $1 / n
    }' "$out/perf"
  echo "floor_sleep10_rps $(floor_rps "$secs") req/s"
  echo "runtime_sleep10_rps $(runtime_rps "$secs") req/s"
done
