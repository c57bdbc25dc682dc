#!/usr/bin/env bash
# Runs the side-by-side benchmark the way docs/benchmarks.md reports it and
# writes everything the report is made from under docs/bench/:
#   DATE.json, DATE.txt     10,000 files in 100 directories, 3 interleaved
#                           rounds of every system (tests/bench/bench.py)
#   DATE.requests.json/.txt 1,000 files, 1 round, FUSE requests and tierfs's
#                           tier calls counted per workload (--count-requests,
#                           root only; skipped otherwise)
#   ratios.svg              the chart of DATE.json (scripts/bench-chart.sh)
# then prints the Markdown tables for docs/benchmarks.md. Build first
# (meson compile -C build); run on a machine as quiet as you can get.
#
# usage: scripts/bench.sh [DATE]      (default: today, UTC)
# environment: BENCH_FILES, BENCH_DIRS, BENCH_REPEAT override the size
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
date=${1:-$(date -u +%F)}
out=$top/docs/bench
mkdir -p "$out"
bench=$top/tests/bench/bench.py

"$bench" --files "${BENCH_FILES:-10000}" --dirs "${BENCH_DIRS:-100}" \
	--repeat "${BENCH_REPEAT:-3}" --json "$out/$date.json" | tee "$out/$date.txt"
if [[ $(id -u) -eq 0 ]]; then
	"$bench" --files 1000 --dirs 10 --repeat 1 --count-requests \
		--json "$out/$date.requests.json" >"$out/$date.requests.txt"
else
	echo "bench.sh: not root: FUSE requests not counted" >&2
fi
"$top/scripts/bench-chart.sh" "$out/$date.json" "$out/ratios.svg"
echo
"$bench" --report "$out/$date.json" --markdown
if [[ -f $out/$date.requests.json ]]; then
	"$bench" --report "$out/$date.requests.json" --markdown | sed -n '/FUSE requests per file/,$p'
fi
