#!/usr/bin/env bash
# Installs missing packages, builds, and mounts tierfs on the embedded SQLite
# store ($XDG_DATA_HOME/tierfs/tierfs.db, or ~/.local/share/tierfs/tierfs.db)
# at MOUNTDIR, in the background.
#
# usage: scripts/try.sh MOUNTDIR [TIERFS_OPTIONS...]
#   e.g. scripts/try.sh ~/tierfs -o entry_timeout=5
set -euo pipefail

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
	echo "usage: $0 MOUNTDIR [TIERFS_OPTIONS...]" >&2
	exit 2
fi
mnt=$1
shift

repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/scripts/deps.sh"
"$repo/scripts/build.sh"

mkdir -p "$mnt"
mnt=$(cd "$mnt" && pwd)
if mountpoint -q "$mnt"; then
	echo "try.sh: $mnt is already a mountpoint; unmount it with: fusermount3 -u $mnt" >&2
	exit 1
fi

"$repo/build/fs/tierfs" "$@" "$mnt"

# tierfs returns once the mount is in place; allow a slow start anyway.
for _ in $(seq 100); do
	mountpoint -q "$mnt" && break
	sleep 0.1
done
if ! mountpoint -q "$mnt"; then
	echo "try.sh: tierfs did not mount $mnt" >&2
	exit 1
fi

store=${TIERFS_SQLITE:-${XDG_DATA_HOME:-$HOME/.local/share}/tierfs/tierfs.db}
cat <<MSG
tierfs is mounted at $mnt
  store:    $store (unless your options chose another)
  try:      mkdir $mnt/user && echo '{"a":1}' > $mnt/user/1.json && getfattr --only-values -n user.tierfs.id $mnt/user/1.json
  unmount:  fusermount3 -u $mnt
MSG
