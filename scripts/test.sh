#!/usr/bin/env bash
# Installs missing packages, builds, runs the unit tests (plain and under
# AddressSanitizer + UBSan in build-asan/), runs each libFuzzer target of
# tests/fuzz/ briefly (scripts/fuzz.sh, clang, build-fuzz/), then the pytest
# integration tests against build-asan/fs/tierfs (or $TIERFS_BIN). pytest runs
# last, so its summary line ends the output. Exit status: pytest's, or 1 when
# pytest passed but a unit test, the sanitizer build or a fuzz target failed.
#
# usage: scripts/test.sh [PYTEST_ARGS...]
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

# The integration tests mount the sanitizer build when it built: the same
# code, with memory errors, undefined behaviour and leaks reported (the
# fixture fails a test whose daemon printed a sanitizer report).
if [[ -z "${TIERFS_BIN:-}" && -x build-asan/fs/tierfs ]]; then
	export TIERFS_BIN="$PWD/build-asan/fs/tierfs"
fi
echo "test.sh: integration tests use ${TIERFS_BIN:-build/fs/tierfs}"

# Debian's pytest: python3 on PATH may be another interpreter without it.
/usr/bin/python3 -m pytest -v -p no:cacheprovider tests/integration "$@"
rc=$?
if [[ $rc -eq 0 && $unit_failed -ne 0 ]]; then
	rc=1
fi
exit $rc
