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
. bench/common.sh
tmp=$out
go_peer go_runtime

echo "# runtime: weft (WEFT_MAXPROCS=$procs) vs $(go env GOVERSION) (GOMAXPROCS=$procs), median of $rounds alternating rounds"
for r in $(seq "$rounds"); do
  WEFT_MAXPROCS=$procs "$build/bench/runtime_bench" > "$tmp/weft.$r"
  GOMAXPROCS=$procs "$build/peers/go_runtime" > "$tmp/go.$r"
done
median_figures "$tmp"/weft.* > "$tmp/weft"
median_figures "$tmp"/go.* > "$tmp/go"
sed 's/^/weft /' "$tmp/weft"
sed 's/^/go /' "$tmp/go"
ratios "$tmp/weft" "$tmp/go" weft/go
