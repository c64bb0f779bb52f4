# Sourced by the bench/*.sh scripts, from the repository root:
#   build=${1:-build/release}; . bench/common.sh
# Gives a scratch directory $out (removed, and background jobs killed, on exit), the Go
# build cache under the build directory, and the helpers below.
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$out"' EXIT
export GOCACHE=${GOCACHE:-$PWD/$build/go-cache}
mkdir -p "$build/peers"
ulimit -n 20000 2>/dev/null || true

# go_peer NAME: builds bench/peers/NAME/main.go into $build/peers/NAME.
go_peer() { go build -o "$build/peers/$1" "./bench/peers/$1/main.go"; }

# wait_up URL: waits until an HTTP server answers (10 s at most).
wait_up() {
  for _ in $(seq 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done
  echo "server at $1 did not come up" >&2
  return 1
}

# sleep10_of PORT SECS CMD...: starts CMD (a server on 127.0.0.1:PORT) and prints its
# sleep10_rps (wrk -t1 -c1000, SECS seconds); prints nothing if it did not start.
sleep10_of() {
  local port=$1 secs=$2
  shift 2
  "$@" &
  local pid=$!
  if wait_up "http://127.0.0.1:$port/sleep?ms=0"; then
    wrk -t1 -c1000 -d"${secs}s" "http://127.0.0.1:$port/sleep?ms=10" 2>&1 | awk '/Requests\/sec/ { print $2 }'
  fi
  kill $pid; wait $pid 2> /dev/null
}

# floor_rps SECS: sleep10_rps of bench/sleep_floor, a server that only waits: what wrk
# and loopback TCP allow that figure on this machine right now.
floor_rps() { sleep10_of 18083 "$1" "$build/bench/sleep_floor" --port 18083 --threads 2; }

# runtime_rps SECS: the same for bench/sleep_runtime, the weft runtime with no HTTP layer
# (a goroutine per connection that reads, sleeps and writes).
runtime_rps() { sleep10_of 18084 "$1" "$build/bench/sleep_runtime" --port 18084 --procs 2; }

# to_ms LATENCY: a wrk latency (1.23ms, 512.00us, 1.02s) in milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000; printf "%.2f", n }'
}

# median_figures FILE...: `name value unit` lines from several rounds -> one line per
# name (its median), in first-seen order; `procs` lines are dropped.
median_figures() {
  cat "$@" | awk '$1 != "procs" { v[$1] = v[$1] " " $2; u[$1] = $3; if (!($1 in seen)) { seen[$1] = 1; order[n++] = $1 } }
    END { for (i = 0; i < n; i++) { k = order[i]; m = split(substr(v[k], 2), a, " ");
            for (x = 1; x <= m; x++) for (y = x + 1; y <= m; y++) if (a[y] + 0 < a[x] + 0) { t = a[x]; a[x] = a[y]; a[y] = t }
            printf "%s %s %s\n", k, a[int((m + 1) / 2)], u[k] } }'
}

# ratios FILE_A FILE_B LABEL: `ratio NAME LABEL A/B` for every figure in both files.
ratios() {
  awk -v label="$3" 'NR==FNR { if ($1 != "procs") a[$1] = $2; next }
       ($1 in a) && $2 > 0 { printf "ratio %s %s %.3f\n", $1, label, a[$1] / $2 }' "$1" "$2"
}
