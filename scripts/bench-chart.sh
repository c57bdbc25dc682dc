#!/usr/bin/env bash
# Renders a bar chart of one benchmark run (a file written by
# `tests/bench/bench.py --json FILE`): per workload, tierfs's ratio to
# passthrough_ll and to tmpfs (and the read-only mount's ratio to tmpfs),
# on a log scale, with each row's target drawn as a black line across the
# bar it applies to. Needs python3 and gnuplot (scripts/deps.sh installs
# gnuplot-nox).
#
# usage: scripts/bench-chart.sh [JSON [SVG]]
#   JSON    default: the newest docs/bench/DATE.json (not *.requests.json)
#   SVG     default: docs/bench/ratios.svg
# environment: BENCH_SYSTEM, the read-write tierfs column to chart
#              (default tierfs-redis-pg, the one the targets are set for)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
json=${1:-$(ls -1 "$top"/docs/bench/*.json 2>/dev/null | grep -v '\.requests\.json$' | sort | tail -n 1 || true)}
svg=${2:-$top/docs/bench/ratios.svg}
system=${BENCH_SYSTEM:-tierfs-redis-pg}
if [[ -z $json || ! -f $json ]]; then
	echo "bench-chart.sh: no benchmark data (${json:-docs/bench/*.json}): run tests/bench/bench.py --json FILE" >&2
	exit 1
fi
command -v gnuplot >/dev/null || { echo "bench-chart.sh: gnuplot not found (scripts/deps.sh installs it)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# One line per workload: x, label, then for each of the three bars its ratio
# and its target (NaN where there is none); the title on stdout.
title=$(python3 - "$json" "$system" "$tmp/data" <<'PY'
import json, sys
path, system, out = sys.argv[1:4]
r = json.load(open(path))
RO = "tierfs-redis-pg-ro"
if system not in r["median"]:
    sys.exit(f"bench-chart.sh: {path} has no {system} column (it has {', '.join(r['median'])})")
rows = [x for x in r["rows"] if x["unit"] not in ("ratio", "ms")]
ratios, targets = r.get("ratios", {}), r.get("targets", {})
bars = [(system, "passthrough_ll"), (system, "tmpfs"), (RO, "tmpfs")]
nan = "NaN"
SHORT = {"create": "create", "stat": "stat (1st)", "stat_hot": "stat hot", "read": "warm read",
         "ls": "ls -l (1st)", "ls_hot": "ls -l hot", "find": "find (1st)", "find_hot": "find hot", "grep": "grep -r", "tar": "tar", "overwrite": "overwrite",
         "cold_stat": "cold stat", "cold_redis": "cold read (redis)",
         "cold_pg": "cold read (postgres)", "cold_sqlite": "cold read (sqlite)",
         "unlink": "unlink"}
lines = []
for row in rows:
    k = row["key"]
    vals, goals = [], []
    for s, ref in bars:
        v = ratios.get(s, {}).get(k, {}).get(ref)
        t = targets.get(s, {}).get(k)
        vals.append(nan if v is None else f"{v:.4f}")
        goals.append(f"{t['min']}" if t and t["ref"] == ref else nan)
    if all(v == nan for v in vals):
        continue
    label = SHORT.get(k, row["label"].strip()).replace('"', "'")
    lines.append((label, vals, goals))
with open(out, "w") as f:
    for i, (label, vals, goals) in enumerate(lines):
        f.write(f'{i} "{label}" ' + " ".join(a + " " + b for a, b in zip(vals, goals)) + "\n")
m = r["machine"]
print(f"tierfs ({system}) vs passthrough_ll and tmpfs, {r['date'][:10]}, {r['files']:,} files "
      f"in {r['dirs']} dirs, median of {r['repeat']}, {m.get('cpus', '?')} CPUs")
PY
)
n=$(wc -l <"$tmp/data")

gnuplot <<GP
set terminal svg size 1100,600 dynamic noenhanced font "sans,12" background rgb "white"
set output "$svg"
set title "$title"
set logscale y
set yrange [0.005:20]
set ytics (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)
set format y "%gx"
set ylabel "ratio (higher is better)"
set xrange [-0.6:$n-0.4]
set xtics rotate by 35 right nomirror
set grid ytics lc rgb "#dddddd"
set key top right
set style fill solid 0.85 noborder
set arrow from graph 0, first 1 to graph 1, first 1 nohead lc rgb "#888888" dt 2
w = 0.26
bottom = 0.005
plot "$tmp/data" using (\$1-w):3:(\$1-1.5*w+0.01):(\$1-0.5*w-0.01):(bottom):3:xtic(2) \
        with boxxyerror lc rgb "#4878cf" title "tierfs / passthrough_ll", \
     "" using (\$1):5:(\$1-0.5*w+0.01):(\$1+0.5*w-0.01):(bottom):5 \
        with boxxyerror lc rgb "#6acc65" title "tierfs / tmpfs", \
     "" using (\$1+w):7:(\$1+0.5*w+0.01):(\$1+1.5*w-0.01):(bottom):7 \
        with boxxyerror lc rgb "#ee854a" title "tierfs -o ro / tmpfs", \
     "" using (\$1-1.5*w):4:(w):(0) with vectors nohead lw 3 lc rgb "black" title "target", \
     "" using (\$1-0.5*w):6:(w):(0) with vectors nohead lw 3 lc rgb "black" notitle, \
     "" using (\$1+0.5*w):8:(w):(0) with vectors nohead lw 3 lc rgb "black" notitle
GP
echo "bench-chart.sh: $svg (from $json)"
