#!/usr/bin/env bash
# Starts and stops a private PostgreSQL 15 server for tests.
#
# usage: scripts/pg-test-server.sh start DIR    prints the URI on stdout
#        scripts/pg-test-server.sh stop DIR     the caller then removes DIR
#        scripts/pg-test-server.sh resume DIR   starts a stopped server
#                                               again on the same port
#
# start: initialises a cluster in DIR/data (initdb, UTF8, C locale, fsync on),
# starts it listening on a free loopback port with its unix socket in DIR,
# creates the role 'tierfs' (password 'tierfs-secret') and the database
# 'tierfs' it owns, waits with pg_isready until it accepts connections (or a
# deadline passes), and prints
#     postgresql://tierfs:tierfs-secret@127.0.0.1:PORT/tierfs
# Loopback TCP connections need the password (scram-sha-256); the unix
# socket in DIR trusts the superuser 'postgres'. The server log is DIR/log.
#
# PostgreSQL refuses to run as root: as root, the server and its tools run
# as the 'postgres' user (runuser), and DIR is given to that user. As any
# other user they run as that user, who must own DIR.
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
READY_TIMEOUT=${PG_READY_TIMEOUT:-60} # seconds
PORT_TRIES=3

die() {
	echo "pg-test-server.sh: $*" >&2
	exit 1
}

usage() {
	echo "usage: $0 start|stop|resume DIR" >&2
	exit 2
}

# Runs a PostgreSQL program as the user that owns the cluster.
as_pg() {
	if [[ $(id -u) -eq 0 ]]; then
		(cd / && runuser -u postgres -- "$@")
	else
		(cd / && "$@")
	fi
}

free_port() {
	python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# Waits until the server on port $1 accepts TCP connections or the deadline
# passes. Returns 0 when ready.
wait_ready() {
	local port=$1 deadline=$((SECONDS + READY_TIMEOUT))

	while ((SECONDS < deadline)); do
		if "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 1; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}

start() {
	local port="" try

	mkdir -p "$DIR"
	if [[ $(id -u) -eq 0 ]]; then
		id postgres >/dev/null 2>&1 || die "no 'postgres' user to run the server as"
		chown postgres: "$DIR"
	fi
	chmod 700 "$DIR"
	[[ -e $DIR/data ]] && die "'$DIR/data' exists already"

	as_pg "$PGBIN/initdb" -D "$DIR/data" -U postgres --encoding=UTF8 \
		--locale=C --auth-local=trust --auth-host=scram-sha-256 \
		>"$DIR/initdb.log" 2>&1 ||
		die "initdb failed: $(tail -n 5 "$DIR/initdb.log")"

	for ((try = 1; try <= PORT_TRIES; try++)); do
		port=$(free_port) || die "cannot find a free port (python3)"
		# -w: pg_ctl waits for the postmaster, and fails at once when
		# it exits (the port was taken meanwhile: try another one)
		if as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w \
			-t "$READY_TIMEOUT" \
			-o "-c listen_addresses=127.0.0.1 -p $port -k $DIR -c fsync=on" \
			start >/dev/null 2>&1 && wait_ready "$port"; then
			break
		fi
		as_pg "$PGBIN/pg_ctl" -D "$DIR/data" stop -m immediate >/dev/null 2>&1 || true
		port=""
	done
	[[ -n $port ]] || die "the server did not start: $(tail -n 5 "$DIR/log")"

	as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$DIR" -p "$port" \
		-U postgres -d postgres \
		-c "CREATE ROLE tierfs LOGIN PASSWORD 'tierfs-secret'" \
		-c "CREATE DATABASE tierfs OWNER tierfs" >>"$DIR/log" 2>&1 ||
		die "cannot create the role and database: $(tail -n 5 "$DIR/log")"

	echo "$port" >"$DIR/port"
	echo "postgresql://tierfs:tierfs-secret@127.0.0.1:$port/tierfs"
}

# Starts a stopped server again on the port it had (outage tests).
resume() {
	local port
	port=$(cat "$DIR/port") || die "no server was started in '$DIR'"
	as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w \
		-t "$READY_TIMEOUT" \
		-o "-c listen_addresses=127.0.0.1 -p $port -k $DIR -c fsync=on" \
		start >/dev/null 2>&1 && wait_ready "$port" ||
		die "the server did not start again: $(tail -n 5 "$DIR/log")"
}

stop() {
	[[ -f $DIR/data/postmaster.pid ]] || return 0 # not running
	as_pg "$PGBIN/pg_ctl" -D "$DIR/data" stop -m fast -w >/dev/null
}

[[ $# -eq 2 ]] || usage
DIR=$(realpath -m -- "$2")
case $1 in
start) start ;;
stop) stop ;;
resume) resume ;;
*) usage ;;
esac
