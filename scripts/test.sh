#!/usr/bin/env bash
# Installs missing packages, builds, runs the unit tests (plain, under
# AddressSanitizer + UBSan in build-asan/ and under ThreadSanitizer in
# build-tsan/), runs each libFuzzer target of tests/fuzz/ briefly
# (scripts/fuzz.sh, clang, build-fuzz/), then the pytest integration tests
# against build-tsan/fs/tierfs and last against build-asan/fs/tierfs (or
# only once, against $TIERFS_BIN when the caller sets it). The ASan pytest
# run is the last command, so its summary line ends the output. Exit
# status: that pytest's, or 1 when it passed but a unit test, a sanitizer
# build, a fuzz target or the ThreadSanitizer integration run failed (said
# above it).
#
# ThreadSanitizer (gcc 12) cannot run with the address-space randomisation
# of kernels set to vm.mmap_rnd_bits > 28 (Ubuntu's 6.x defaults): every
# TSan binary dies with "FATAL: ThreadSanitizer: unexpected memory mapping".
# Then the TSan runs go through `setarch $(uname -m) -R` (no randomisation
# for that process tree), or fail when even that is not allowed.
#
# Times on a 2-CPU VM: ASan build ~4 min, ASan unit tests ~2 min, TSan build
# ~4 min, TSan unit tests ~1.5 min, fuzz targets ~20 s, each integration
# run ~4-5 min.
#
# usage: scripts/test.sh [PYTEST_ARGS...]   (passed to both pytest runs)
#   TIERFS_FUZZ_SECONDS=N   seconds per fuzz target (default 3; 0 skips them)
set -uo pipefail
cd "$(dirname "$0")/.." || exit

scripts/deps.sh || exit
scripts/build.sh || exit

unit_failed=0

# Private PostgreSQL and Redis servers on free loopback ports in a temp dir,
# for the tests that need them (they skip when the variables are unset).
servers=$(mktemp -d /tmp/tierfs-test-servers.XXXXXX)
cleanup() { # silent: pytest's summary line must stay the last line
	{
		[[ -f $servers/redis/redis.pid ]] && scripts/redis-test-server.sh stop "$servers/redis"
		[[ -d $servers/pg/data ]] && scripts/pg-test-server.sh stop "$servers/pg"
		rm -rf "$servers"
	} >/dev/null 2>&1
}
trap cleanup EXIT
chmod 755 "$servers"
if [[ -z ${TIERFS_TEST_POSTGRES:-} ]]; then
	mkdir "$servers/pg"
	if TIERFS_TEST_POSTGRES=$(scripts/pg-test-server.sh start "$servers/pg"); then
		export TIERFS_TEST_POSTGRES
	else
		echo "test.sh: cannot start a private PostgreSQL server" >&2
		unit_failed=1
	fi
fi
if [[ -z ${TIERFS_TEST_REDIS:-} && -x scripts/redis-test-server.sh ]]; then
	mkdir "$servers/redis"
	if TIERFS_TEST_REDIS=$(scripts/redis-test-server.sh start "$servers/redis"); then
		export TIERFS_TEST_REDIS
	else
		echo "test.sh: cannot start a private Redis server" >&2
		unit_failed=1
	fi
fi

meson test -C build --print-errorlogs || unit_failed=1

if BUILD_DIR=build-asan scripts/build.sh -Db_sanitize=address,undefined -Db_lundef=false; then
	meson test -C build-asan --print-errorlogs || unit_failed=1
else
	echo "test.sh: the sanitizer build failed" >&2
	unit_failed=1
fi

# ThreadSanitizer: data races and lock misuse between the FUSE workers and
# the engine's threads (flusher, group commit, filter builder). A report
# makes the program exit 66, so the test fails.
tsan=() # the command prefix the TSan binaries need (see the top)
tsan_ok=0
if BUILD_DIR=build-tsan scripts/build.sh -Db_sanitize=thread -Db_lundef=false; then
	if build-tsan/fs/tierfs --version >/dev/null 2>&1; then
		tsan_ok=1
	elif setarch "$(uname -m)" -R build-tsan/fs/tierfs --version >/dev/null 2>&1; then
		tsan=(setarch "$(uname -m)" -R)
		tsan_ok=1
	else
		echo "test.sh: the ThreadSanitizer build cannot run here:" >&2
		build-tsan/fs/tierfs --version 2>&1 | head -3 >&2
		unit_failed=1
	fi
	if [[ $tsan_ok -eq 1 ]]; then
		"${tsan[@]}" meson test -C build-tsan --print-errorlogs || unit_failed=1
	fi
else
	echo "test.sh: the ThreadSanitizer build failed" >&2
	unit_failed=1
fi

# The fuzz targets, a few seconds each (about 15 s in all on 2 CPUs, 20 s
# with the build): a crash, a leak or a broken invariant fails the run, and
# fuzz.sh prints the reproducer.
fuzz_seconds=${TIERFS_FUZZ_SECONDS:-3}
if [[ $fuzz_seconds != 0 ]] && ! scripts/fuzz.sh "$fuzz_seconds"; then
	echo "test.sh: a fuzz target failed or did not build (see above)" >&2
	unit_failed=1
fi

if [[ $unit_failed -ne 0 ]]; then
	echo "test.sh: UNIT TESTS FAILED (see above); running the integration tests anyway" >&2
fi

# The integration tests mount the sanitizer builds: the same code, with
# data races (TSan), memory errors, undefined behaviour and leaks (ASan +
# UBSan) reported; the fixture fails a test whose daemon printed a
# sanitizer report. First the TSan build, then the ASan build, whose pytest
# summary line ends the output. A caller's $TIERFS_BIN replaces both.
# Debian's pytest: python3 on PATH may be another interpreter without it.
if [[ -z "${TIERFS_BIN:-}" && $tsan_ok -eq 1 ]]; then
	echo "test.sh: integration tests use $PWD/build-tsan/fs/tierfs (ThreadSanitizer)"
	if ! TIERFS_BIN="$PWD/build-tsan/fs/tierfs" "${tsan[@]}" \
		/usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration "$@"; then
		echo "test.sh: INTEGRATION TESTS UNDER THREADSANITIZER FAILED (see above)" >&2
		unit_failed=1
	fi
fi
if [[ -z "${TIERFS_BIN:-}" && -x build-asan/fs/tierfs ]]; then
	export TIERFS_BIN="$PWD/build-asan/fs/tierfs"
fi
echo "test.sh: integration tests use ${TIERFS_BIN:-build/fs/tierfs}"

/usr/bin/python3 -m pytest -v -p no:cacheprovider tests/integration "$@"
rc=$?
if [[ $rc -eq 0 && $unit_failed -ne 0 ]]; then
	rc=1
fi
exit $rc
