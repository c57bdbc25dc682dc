#!/usr/bin/env bash
# Configures (once) and builds tierfs with meson + ninja.
#
# usage: scripts/build.sh [MESON_SETUP_OPTIONS...]
#   BUILD_DIR=dir   build directory (default: build)
# Options given for an already configured directory are applied with
# `meson configure`.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${BUILD_DIR:-build}
if [[ -f $dir/build.ninja ]]; then
	if [[ $# -gt 0 ]]; then
		meson configure "$dir" "$@"
	fi
elif [[ -d $dir/meson-private ]]; then
	meson setup --wipe "$dir" "$@"   # a setup that failed half-way
else
	meson setup "$dir" "$@"
fi
meson compile -C "$dir"
