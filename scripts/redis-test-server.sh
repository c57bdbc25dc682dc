#!/usr/bin/env bash
# Starts and stops a private Redis server for tests.
#
# usage: scripts/redis-test-server.sh start DIR [REDIS-ARGS...]   prints the URL
#        scripts/redis-test-server.sh stop DIR                    the caller then removes DIR
#
# start: runs Debian's redis-server on a free loopback port with no
# persistence (--save '' --appendonly no), daemonized, its pid in
# DIR/redis.pid, its log in DIR/redis.log and its working directory DIR;
# REDIS-ARGS are passed on (e.g. --requirepass secret, --maxmemory 10mb).
# Waits until the server answers PING (or a deadline passes) and prints
#     redis://127.0.0.1:PORT             or, with --requirepass PW,
#     redis://:PW@127.0.0.1:PORT         (PW percent-encoded)
# The port is also written to DIR/redis.port.
#
# stop: asks the server to exit (SIGTERM: with no persistence configured it
# saves nothing) and waits until the process is gone, killing it after a
# deadline. Does nothing when no server runs in DIR.
set -euo pipefail

REDIS_SERVER=${REDIS_SERVER:-redis-server}
REDIS_CLI=${REDIS_CLI:-redis-cli}
READY_TIMEOUT=${REDIS_READY_TIMEOUT:-20} # seconds
STOP_TIMEOUT=10                          # seconds before SIGKILL
PORT_TRIES=3

die() {
	echo "redis-test-server.sh: $*" >&2
	exit 1
}

usage() {
	echo "usage: $0 start DIR [REDIS-ARGS...] | stop DIR" >&2
	exit 2
}

free_port() {
	python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

urlencode() {
	python3 -c 'import sys, urllib.parse
print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"
}

# Prints the pid in DIR/redis.pid when that process is a live redis-server.
server_pid() {
	local pid

	[[ -f $DIR/redis.pid ]] || return 1
	pid=$(<"$DIR/redis.pid")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	[[ -r /proc/$pid/comm ]] || return 1
	[[ $(<"/proc/$pid/comm") == redis-server* ]] || return 1
	echo "$pid"
}

# Waits until the server on port $1 answers PING, gives up early when the
# log says it could not listen. Returns 0 when ready.
wait_ready() {
	local port=$1 deadline=$((SECONDS + READY_TIMEOUT)) answer

	while ((SECONDS < deadline)); do
		# NOAUTH also proves that the server is up and listening.
		answer=$("$REDIS_CLI" -h 127.0.0.1 -p "$port" ping 2>/dev/null || true)
		case $answer in
		PONG* | NOAUTH*) return 0 ;;
		esac
		if [[ -f $DIR/redis.log ]] &&
			grep -q "Could not create server TCP listening socket\|Address already in use" "$DIR/redis.log"; then
			return 1
		fi
		sleep 0.05
	done
	return 1
}

start() {
	local port="" try pass="" i pid
	local -a extra=("$@")

	for ((i = 0; i < ${#extra[@]}; i++)); do
		if [[ ${extra[i]} == --requirepass && $((i + 1)) -lt ${#extra[@]} ]]; then
			pass=${extra[i + 1]}
		fi
	done

	command -v "$REDIS_SERVER" >/dev/null || die "no '$REDIS_SERVER' binary (apt-get install redis-server)"
	command -v "$REDIS_CLI" >/dev/null || die "no '$REDIS_CLI' binary (apt-get install redis-tools)"
	mkdir -p "$DIR"
	chmod 700 "$DIR"
	server_pid >/dev/null && die "a server runs in '$DIR' already"

	for ((try = 1; try <= PORT_TRIES; try++)); do
		port=$(free_port) || die "cannot find a free port (python3)"
		rm -f "$DIR/redis.log" "$DIR/redis.pid"
		"$REDIS_SERVER" --dir "$DIR" --save '' --appendonly no \
			--daemonize yes --pidfile "$DIR/redis.pid" \
			--logfile "$DIR/redis.log" --bind 127.0.0.1 \
			--port "$port" "${extra[@]}" >/dev/null 2>&1 ||
			die "redis-server failed: $(tail -n 5 "$DIR/redis.log" 2>/dev/null)"
		if wait_ready "$port"; then
			break
		fi
		if pid=$(server_pid); then
			kill -KILL "$pid" 2>/dev/null || true
		fi
		port=""
	done
	[[ -n $port ]] || die "the server did not start: $(tail -n 5 "$DIR/redis.log" 2>/dev/null)"
	echo "$port" >"$DIR/redis.port"

	if [[ -n $pass ]]; then
		echo "redis://:$(urlencode "$pass")@127.0.0.1:$port"
	else
		echo "redis://127.0.0.1:$port"
	fi
}

# True while process $1 exists and is not a zombie (a daemon's parent is
# init, which may reap it late).
alive() {
	local stat

	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ ${stat%% *} != Z ]]
}

stop() {
	local pid deadline

	pid=$(server_pid) || return 0 # not running
	kill -TERM "$pid" 2>/dev/null || return 0
	deadline=$((SECONDS + STOP_TIMEOUT))
	while alive "$pid"; do
		if ((SECONDS >= deadline)); then
			kill -KILL "$pid" 2>/dev/null || true
			deadline=$((SECONDS + STOP_TIMEOUT))
		fi
		sleep 0.05
	done
}

[[ $# -ge 2 ]] || usage
CMD=$1
DIR=$(realpath -m -- "$2")
shift 2
case $CMD in
start) start "$@" ;;
stop)
	[[ $# -eq 0 ]] || usage
	stop
	;;
*) usage ;;
esac
