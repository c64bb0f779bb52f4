#!/usr/bin/env bash
# Runs each weft benchmark next to its peer, in one invocation, and prints every figure
# followed by the ratios (weft/peer).
#
# The machines are shared and noisy: absolute numbers drift by 30% and more between
# runs, and a slow phase hits both runtimes. So weft and its peer run alternately,
# ROUNDS times each, and each figure is the median of its rounds; the ratio of medians
# from one invocation is what we compare.
#
#   bench/run_benchmarks.sh [BUILD_DIR]     (default build/release; ROUNDS=3)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/release}
procs=2
rounds=${ROUNDS:-3}
export GOCACHE=${GOCACHE:-$PWD/$build/go-cache}
mkdir -p "$build/peers"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

go build -o "$build/peers/go_runtime" ./bench/peers/go_runtime/main.go

# median FILE...: `name value unit` lines from several rounds -> one line per name.
median() {
  cat "$@" | awk '{ v[$1] = v[$1] " " $2; u[$1] = $3; if (!($1 in seen)) { seen[$1] = 1; order[n++] = $1 } }
    END { for (i = 0; i < n; i++) { k = order[i]; m = split(substr(v[k], 2), a, " ");
            for (x = 1; x <= m; x++) for (y = x + 1; y <= m; y++) if (a[y] < a[x]) { t = a[x]; a[x] = a[y]; a[y] = t }
            printf "%s %s %s\n", k, a[int((m + 1) / 2)], u[k] } }'
}

# ratio FILE_A FILE_B LABEL: `ratio NAME LABEL VALUE` for every figure in both.
ratio() {
  awk -v label="$3" 'NR==FNR { if ($1 != "procs") a[$1] = $2; next }
       ($1 in a) && $2 > 0 { printf "ratio %s %s %.2f\n", $1, label, a[$1] / $2 }' "$1" "$2"
}

echo "# runtime: weft (WEFT_MAXPROCS=$procs) vs $(go env GOVERSION) (GOMAXPROCS=$procs), median of $rounds alternating rounds"
for r in $(seq "$rounds"); do
  WEFT_MAXPROCS=$procs "$build/bench/runtime_bench" > "$tmp/weft.$r"
  GOMAXPROCS=$procs "$build/peers/go_runtime" > "$tmp/go.$r"
done
median "$tmp"/weft.* > "$tmp/weft"
median "$tmp"/go.* > "$tmp/go"
sed 's/^/weft /' "$tmp/weft"
sed 's/^/go /' "$tmp/go"
ratio "$tmp/weft" "$tmp/go" weft/go
