#!/bin/sh
# Hooks of a failover group over two PostgreSQL servers on one machine (docs/failover.md):
#
#   pg-hook.sh health    exit 0 when the server answers; prints "lag: N" (bytes) on a standby
#   pg-hook.sh fence     stop the server (fast shutdown): nothing can write to it any more
#   pg-hook.sh promote   start it if it is down; promote it if it is a standby
#   pg-hook.sh demote    make it a standby of the peer: pg_rewind (or a new base backup) and start
#
# The member's environment says where its server is: PGDATA, PGPORT, PEER_PORT (the other
# server's port) and PGBIN (default /usr/lib/postgresql/15/bin). PostgreSQL refuses to run as
# root: as root, every PostgreSQL command runs as the user postgres.
set -eu
cd /   # every path below is absolute, and the user postgres may not enter the caller's directory
: "${PGBIN:=/usr/lib/postgresql/15/bin}"
: "${PGDATA:?PGDATA is required}" "${PGPORT:?PGPORT is required}"
log="$PGDATA/../postgres-$PGPORT.log"       # the server's, written by it
hooklog="$PGDATA/../hook-$PGPORT.log"      # pg_rewind's and pg_basebackup's

as_pg() {
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
sql() { as_pg "$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -Atqc "$1"; }
running() { as_pg "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; }
start() { as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$log" -w -t 60 -o "-p $PGPORT" start >/dev/null; }
stop() {
	if running; then as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop >/dev/null; fi
}

case "${1:-}" in
health)
	as_pg "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PGPORT"
	if [ "$(sql 'select pg_is_in_recovery()')" = t ]; then
		echo "lag: $(sql 'select coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::bigint')"
	fi
	;;
fence)
	stop
	;;
promote)
	running || start
	if [ "$(sql 'select pg_is_in_recovery()')" = t ]; then
		as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -w -t 60 promote >/dev/null
		# The new timeline reaches the control file at the next checkpoint; pg_rewind reads it
		# there, so a returning old primary could not rewind onto this one before it.
		sql 'checkpoint' >/dev/null
	fi
	;;
demote)
	: "${PEER_PORT:?PEER_PORT is required}"
	if running && [ "$(sql 'select pg_is_in_recovery()')" = t ] &&
		[ "$(sql "select count(*) from pg_stat_wal_receiver where conninfo like '%port=$PEER_PORT%'")" = 1 ]; then
		exit 0 # a standby following the peer already
	fi
	stop
	src="host=127.0.0.1 port=$PEER_PORT user=postgres dbname=postgres"
	as_pg "$PGBIN/psql" -h 127.0.0.1 -p "$PEER_PORT" -U postgres -d postgres -Atqc checkpoint >/dev/null
	if ! as_pg "$PGBIN/pg_rewind" -D "$PGDATA" --source-server="$src" >>"$hooklog" 2>&1; then
		# Not rewindable (another timeline history, a lost WAL): start over from a base backup.
		rm -rf "$PGDATA"
		as_pg "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$PEER_PORT" -U postgres -D "$PGDATA" -X stream >>"$hooklog" 2>&1
	fi
	# pg_rewind copies the peer's configuration: point this one at the peer, as a standby.
	echo "primary_conninfo = 'host=127.0.0.1 port=$PEER_PORT user=postgres application_name=godwit'" |
		as_pg tee -a "$PGDATA/postgresql.auto.conf" >/dev/null
	as_pg touch "$PGDATA/standby.signal"
	start
	;;
*)
	echo "usage: $0 health|fence|promote|demote" >&2
	exit 2
	;;
esac
