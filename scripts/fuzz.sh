#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz/ in build-fuzz/ (clang,
# -Dfuzz=true: libFuzzer coverage, AddressSanitizer and UBSan everywhere)
# and runs each for SECONDS (default 10) on a copy of its seed corpus,
# tests/fuzz/corpus/<target>/, so that the committed corpus never grows.
#
# usage: scripts/fuzz.sh [SECONDS_PER_TARGET]
#        scripts/fuzz.sh --seeds        rewrite the seeds fuzz_seeds makes
#   FUZZ_TARGETS="fuzz_id fuzz_wal"     run only these (default: all five)
#   FUZZ_JOBS=N                         targets run at a time (default: the
#                                       number of CPUs)
#   FUZZ_WORK=DIR                       work directory (default: a temp dir,
#                                       removed unless something was found)
#
# Exit status: 0 when no target found anything; 1 when one crashed, leaked,
# timed out or broke an invariant (its reproducer path and report are
# printed: rerun it with build-fuzz/tests/fuzz/TARGET REPRODUCER); 2 when
# the build failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

all_targets=(fuzz_id fuzz_json fuzz_wal fuzz_redis_meta fuzz_options)
# -max_len per target: past the limits each input format has (an ID is at
# most 4095 bytes; a WAL record's content can be long, a blob's name is at
# most 255 bytes, a command line is short).
declare -A max_len=([fuzz_id]=8192 [fuzz_json]=4096 [fuzz_wal]=8192
	[fuzz_redis_meta]=2048 [fuzz_options]=1024)

dir=build-fuzz
if [[ ! -f $dir/build.ninja ]]; then
	rm -rf "$dir"
	if ! CC=clang meson setup "$dir" -Dfuzz=true -Db_lundef=false >/dev/null; then
		echo "fuzz.sh: cannot configure $dir (is clang installed? scripts/deps.sh)" >&2
		exit 2
	fi
fi

if [[ ${1:-} == --seeds ]]; then
	meson compile -C "$dir" fuzz_seeds >/dev/null || exit 2
	"$dir/tests/fuzz/fuzz_seeds" tests/fuzz/corpus || exit 2
	echo "fuzz.sh: seeds written to tests/fuzz/corpus/"
	exit 0
fi

seconds=${1:-10}
if ! [[ $seconds =~ ^[0-9]+$ && $seconds -gt 0 ]]; then
	echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] | --seeds" >&2
	exit 2
fi
read -r -a targets <<<"${FUZZ_TARGETS:-${all_targets[*]}}"
jobs=${FUZZ_JOBS:-$(nproc)}
[[ $jobs -gt ${#targets[@]} ]] && jobs=${#targets[@]}

if ! meson compile -C "$dir" "${targets[@]}" >"$dir/fuzz-build.log" 2>&1; then
	cat "$dir/fuzz-build.log" >&2
	echo "fuzz.sh: the fuzz build failed" >&2
	exit 2
fi

work=${FUZZ_WORK:-$(mktemp -d /tmp/tierfs-fuzz.XXXXXX)}
mkdir -p "$work"

# Runs target $1 for $seconds; its log, grown corpus and findings go to
# $work/$1/.
run_one() {
	local t=$1 w=$work/$1
	rm -rf "$w"
	mkdir -p "$w/corpus"
	cp tests/fuzz/corpus/"$t"/* "$w/corpus/" 2>/dev/null
	"$dir/tests/fuzz/$t" -max_total_time="$seconds" -max_len="${max_len[$t]}" \
		-timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$w/" "$w/corpus" >"$w/log" 2>&1
	echo $? >"$w/rc"
}

start=$SECONDS
running=0
for t in "${targets[@]}"; do
	if [[ -z ${max_len[$t]:-} ]]; then
		echo "fuzz.sh: no target '$t'" >&2
		exit 2
	fi
	run_one "$t" &
	running=$((running + 1))
	if [[ $running -ge $jobs ]]; then
		wait -n
		running=$((running - 1))
	fi
done
wait

found=0
for t in "${targets[@]}"; do
	w=$work/$t
	rc=$(cat "$w/rc" 2>/dev/null || echo 1)
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$w/log" | tail -n1)
	cov=$(grep -o 'cov: [0-9]*' "$w/log" | tail -n1 | cut -d' ' -f2)
	artifacts=$(find "$w" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' \
		-o -name 'timeout-*' -o -name 'oom-*' \) | sort)
	if [[ $rc -eq 0 && -z $artifacts ]]; then
		echo "fuzz.sh: $t: ok (${runs:-?} runs, coverage ${cov:-?})"
		continue
	fi
	found=1
	echo "fuzz.sh: $t: FAILED (exit $rc); the end of its log:" >&2
	grep -v -e '^#[0-9]' -e '^INFO:' "$w/log" | tail -n 60 >&2
	for a in $artifacts; do
		echo "fuzz.sh: $t: reproducer $a (rerun: $dir/tests/fuzz/$t $a)" >&2
	done
done
echo "fuzz.sh: ${#targets[@]} targets, ${seconds} s each, $jobs at a time: $((SECONDS - start)) s"
if [[ $found -eq 0 && -z ${FUZZ_WORK:-} ]]; then
	rm -rf "$work"
elif [[ $found -ne 0 ]]; then
	echo "fuzz.sh: logs and inputs kept in $work" >&2
fi
exit $found
