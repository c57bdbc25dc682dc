#!/usr/bin/env bash
# Installs the Debian 12 packages tierfs needs to build, mount, test and
# benchmark. apt is called only when a package is missing, unless FORCE=1
# (then always `apt-get update` + `apt-get install -y`). Runs apt as root, or
# through sudo when not root.
#
# usage: scripts/deps.sh            FORCE=1 scripts/deps.sh
set -euo pipefail

PACKAGES=(
	build-essential pkg-config meson ninja-build clang
	libfuse3-dev fuse3
	libhiredis-dev libpq-dev libjansson-dev libsqlite3-dev libssl-dev
	zlib1g-dev libxxhash-dev
	python3-pytest attr rsync tar restic borgbackup sqlite3 stress-ng strace
	gnuplot-nox
	postgresql-15 postgresql-client-15 redis-server redis-tools
)

missing=()
for pkg in "${PACKAGES[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
	[[ $status == installed ]] || missing+=("$pkg")
done

if [[ ${FORCE:-0} != 1 && ${#missing[@]} -eq 0 ]]; then
	exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
	as_root=(env DEBIAN_FRONTEND=noninteractive)
elif command -v sudo >/dev/null; then
	as_root=(sudo env DEBIAN_FRONTEND=noninteractive)
else
	echo "deps.sh: missing packages: ${missing[*]:-none}" >&2
	echo "deps.sh: not root and no sudo: install them as root with apt-get install" >&2
	exit 1
fi

if [[ ${FORCE:-0} == 1 ]]; then
	install=("${PACKAGES[@]}")
else
	install=("${missing[@]}")
	echo "deps.sh: installing ${install[*]}" >&2
fi
"${as_root[@]}" apt-get update
"${as_root[@]}" apt-get install -y "${install[@]}"
