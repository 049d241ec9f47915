#!/bin/sh
# SPDX-License-Identifier: MIT
# upcctl daemon clients, stats, drop, sync and top (tools/upcctl-daemon.c)
# against a upcd of its own, with a client (tests/upcd-client) that maps 64
# pages of a file, writes every page, pins 4 and waits:
#   - clients, text and --json: the client's pid, comm, one mapping of
#     256 KiB, 4 pinned pages, faults and requests served; upcctl's own
#     connection as "-" (no address space);
#   - stats, text and --json: the daemon-wide counters (64 dirty pages,
#     4 pinned, the client's mapping);
#   - top -n 2 -d 0.2 on a pipe: two screens, no terminal escapes, the
#     client's line; on a terminal (script(1)), screens cleared and q quits;
#   - as uid nobody: clients, drop and sync exit 4 with EPERM's message and
#     change nothing (dirty and cached pages the same after), status hides
#     root's client, stats works, top shows the cache without clients;
#   - the client exits without msync; sync (on a pipe, then on a terminal
#     through script(1): the bar at 100 %) writes every page back: the
#     file holds what the client wrote, and no page is dirty;
#   - drop: the count it prints is what left the cache;
#   - usage errors (exit 2), upcd's bad options (exit 2), and exit 3 for
#     every command when no daemon runs.
# Skips where upcache cannot create a cache (upcctl probe).
. "$(dirname "$0")/sh-lib.sh"

UPCCTL=$B/tools/upcctl
UPCD=$B/daemon/upcd
CLIENT=$B/tests/upcd-client
W=$(mktemp -d "${TMPDIR:-/tmp}/upc-ops.XXXXXX") || exit 99
chmod 0711 "$W"		# nobody reaches the socket (mode 0666), nothing else
S=$W/upcd.sock
F=$W/data
pid= cpid=
cleanup() {
	[ -n "$cpid" ] && kill -KILL "$cpid" 2>/dev/null
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	rm -rf "$W"
}
trap cleanup EXIT
unset UPC_SOCKET

# expect NAME STATUS CMD...: CMD exits STATUS; its output in $W/out, $W/err.
expect() {
	name=$1 want=$2
	shift 2
	"$@" >"$W/out" 2>"$W/err"
	got=$?
	if [ "$got" = "$want" ]; then
		return 0
	fi
	fail "$name" "exit status $got, not $want: $*"
	sed 's/^/  stdout: /' "$W/out"
	sed 's/^/  stderr: /' "$W/err"
	return 1
}

# has NAME FILE PATTERN: FILE has a line matching the extended regex PATTERN.
has() {
	grep -qE -e "$3" "$2" && return 0
	fail "$1" "no line matching \"$3\" in:"
	sed 's/^/  /' "$2"
	return 1
}

# json NAME KEY: the number after "KEY": in $W/out.
json() {
	sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" "$W/out" | head -n 1
}

start() {
	"$UPCD" --foreground --socket "$S" --mode 0666 "$@" &
	pid=$!
	i=0
	while [ $i -lt 200 ]; do
		"$UPCCTL" daemon status --socket "$S" >/dev/null 2>&1 && return 0
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}

stop() {
	kill -TERM "$pid"
	wait "$pid"
	st=$?
	pid=
	return $st
}

# as_nobody CMD...: CMD as uid and gid 65534, or status 77 when that cannot be done.
as_nobody() {
	if [ "$(id -u)" != 0 ] || ! command -v setpriv >/dev/null 2>&1; then
		return 77
	fi
	setpriv --reuid=65534 --regid=65534 --clear-groups "$@"
}

if ! "$UPCCTL" probe --json >/dev/null 2>&1; then
	skip all "upcache cannot create a cache here (upcctl probe): upcd cannot start"
	finish
fi

expect usage 2 "$UPCCTL" daemon clients --bogus && expect usage 2 "$UPCCTL" daemon drop --json &&
	expect usage 2 "$UPCCTL" daemon sync --writeback && expect usage 2 "$UPCCTL" daemon top -n 0 &&
	expect usage 2 "$UPCCTL" daemon top -d x && expect usage 2 "$UPCCTL" daemon stats -n 1 &&
	expect usage 0 "$UPCCTL" daemon top --help && has usage "$W/out" "daemon sync \[--quiet\]" &&
	pass usage

expect upcd_options 2 "$UPCD" --foreground --socket "$S" --max-clients-per-user x &&
	expect upcd_options 2 "$UPCD" --foreground --socket "$S" --max-clients-per-user -1 &&
	expect upcd_options 2 "$UPCD" --foreground --socket "$S" --max-pinned-per-client 100 &&
	expect upcd_options 0 "$UPCD" --help && has upcd_options "$W/out" "--max-clients-per-user N" &&
	has upcd_options "$W/out" "--max-pinned-per-client SIZE" && [ ! -e "$S" ] && pass upcd_options

for c in clients stats drop sync top; do
	expect "no_daemon_$c" 3 "$UPCCTL" daemon $c --socket "$S" &&
		has "no_daemon_$c" "$W/err" "no upcd is running on $S" && pass "no_daemon_$c"
done

if ! start; then
	fail start "upcd --foreground --socket $S did not answer within 20 s"
	finish
fi

# The client: 64 pages of zeros, each read and written ('w'), 4 pinned.
dd if=/dev/zero of="$F" bs=4096 count=64 2>/dev/null
mkfifo "$W/in"
: >"$W/cout"
"$CLIENT" "$S" "$F" 64 --write w --pin 4 <"$W/in" >"$W/cout" 2>"$W/cerr" &
cpid=$!
exec 7>"$W/in"
i=0
while [ $i -lt 200 ] && ! grep -q ready "$W/cout"; do
	kill -0 "$cpid" 2>/dev/null || break
	sleep 0.1
	i=$((i + 1))
done
if ! grep -q ready "$W/cout"; then
	wait "$cpid"
	cst=$?
	cpid=
	if [ "$cst" = 77 ]; then
		skip client "$(cat "$W/cerr")"
	else
		fail client "upcd-client did not get ready (exit $cst): $(cat "$W/cerr")"
	fi
	stop
	finish
fi

expect clients 0 "$UPCCTL" daemon clients --socket "$S" &&
	has clients "$W/out" "^ +PID +UID +COMMAND +MAPS +MAPPED +PINNED +FAULTS +REQUESTS +RECLAIM$" &&
	has clients "$W/out" "^ +$cpid +0 upcd-client +1 +256K +4 +[1-9][0-9]* +[1-9][0-9]* +(-|ok)$" &&
	has clients "$W/out" "^ +[0-9]+ +0 upcctl +- +- +0 +0 +1 +-$" && [ ! -s "$W/err" ] && pass clients

expect clients_json 0 "$UPCCTL" daemon clients --json --socket "$S" &&
	has clients_json "$W/out" "^\{\"socket\":\"$S\",\"clients\":\[.*\]\}$" &&
	has clients_json "$W/out" "\{\"pid\":$cpid,\"uid\":0,\"comm\":\"upcd-client\",\"attached\":true,\"mappings\":1,\"map_bytes\":262144,\"pinned\":4,\"faults\":[1-9][0-9]*,\"requests\":[1-9][0-9]*,\"reclaim\":\"(none|ok)\"\}" &&
	has clients_json "$W/out" "\"comm\":\"upcctl\",\"attached\":false" && pass clients_json

expect stats 0 "$UPCCTL" daemon stats --socket "$S" && has stats "$W/out" "^upcd on $S" &&
	has stats "$W/out" "^  tracking (synchronous|asynchronous), memory limit .*, 1 files, 1 mappings$" &&
	has stats "$W/out" "^  pages      cached [0-9]+ .* dirty 64  writeback 0  pinned 4 " &&
	has stats "$W/out" "^  faults     missing [1-9]" && pass stats

expect stats_json 0 "$UPCCTL" daemon stats --json --socket "$S" &&
	has stats_json "$W/out" "^\{\"socket\":\"$S\",\"track_mode\":\"(sync|async)\",.*\}$" &&
	[ "$(json pages_dirty)" = 64 ] && [ "$(json pages_pinned)" = 4 ] && [ "$(json nr_mappings)" = 1 ] &&
	[ "$(json nr_files)" = 1 ] && pass stats_json || fail stats_json "$(cat "$W/out")"
cached=$(json pages_cached)

expect top 0 "$UPCCTL" daemon top -n 2 -d 0.2 --socket "$S" &&
	[ "$(grep -c '^upcctl daemon top - ' "$W/out")" = 2 ] &&
	has top "$W/out" "^cache +[0-9]+ pages .* dirty 64 .* pinned 4 .* files 1 +mappings 1 " &&
	has top "$W/out" "^per s +faults [0-9]+ " &&
	has top "$W/out" "^ +$cpid +0 upcd-client +1 +256K +4 " && ! grep -q "$(printf '\033')" "$W/out" &&
	pass top

# On a terminal: q quits (script(1) gives it one; the q comes a second in).
if command -v script >/dev/null 2>&1 && command -v timeout >/dev/null 2>&1; then
	(sleep 1; printf q) | timeout 20 script -qec "'$UPCCTL' daemon top -d 0.2 --socket '$S'" /dev/null >"$W/tty" 2>&1
	st=$?
	if [ $st = 0 ] && grep -q "every 0.2 s; q quits" "$W/tty" && grep -q "$(printf '\033')\[2J" "$W/tty"; then
		pass top_q
	else
		fail top_q "exit $st (124: q did not quit): $(tr '\r\033' '\n ' <"$W/tty" | head -n 5)"
	fi
else
	skip top_q "no script(1) or timeout(1) to run upcctl on a terminal"
fi

# As nobody: what reveals others or changes the cache is refused, and nothing changes.
as_nobody true
if [ $? = 77 ]; then
	skip nobody "needs root and setpriv(1) to run upcctl as uid 65534"
else
	ok=1
	for c in clients drop sync; do
		expect "nobody_$c" 4 as_nobody "$UPCCTL" daemon $c --socket "$S" &&
			has "nobody_$c" "$W/err" "upcd on $S: $c: Operation not permitted \(root or the user upcd runs as only\)" ||
			ok=0
	done
	expect nobody_drop_writeback 4 as_nobody "$UPCCTL" daemon drop --writeback --socket "$S" || ok=0
	expect nobody_status 0 as_nobody "$UPCCTL" daemon status --socket "$S" && has nobody_status "$W/out" "^clients 2$" &&
		! grep -q "^client pid $cpid " "$W/out" || { ok=0; fail nobody_status "root's client shown to nobody"; }
	expect nobody_top 0 as_nobody "$UPCCTL" daemon top -n 1 --socket "$S" &&
		has nobody_top "$W/out" "^\(clients: root or the user upcd runs as only\)$" || ok=0
	expect nobody_stats 0 as_nobody "$UPCCTL" daemon stats --json --socket "$S" &&
		[ "$(json pages_dirty)" = 64 ] && [ "$(json pages_cached)" = "$cached" ] ||
		{ ok=0; fail nobody_changed_nothing "after nobody's drop and sync: $(cat "$W/out")"; }
	[ "$(od -An -c -N 1 "$F" | tr -d ' ')" = '\0' ] || { ok=0; fail nobody_changed_nothing "the file was written"; }
	[ $ok = 1 ] && pass nobody
fi

# The client exits without msync: its 64 dirty pages are the daemon's.
exec 7>&-
wait "$cpid"
cpid=
i=0
while [ $i -lt 100 ] && "$UPCCTL" daemon clients --socket "$S" | grep -q upcd-client; do
	sleep 0.1
	i=$((i + 1))
done
expect sync 0 "$UPCCTL" daemon sync --socket "$S" && has sync "$W/out" "^synced 1 files" &&
	! grep -q '%' "$W/out" && expect sync 0 "$UPCCTL" daemon stats --json --socket "$S" &&
	[ "$(json pages_dirty)" = 0 ] && [ "$(json pages_writeback)" = 0 ] &&
	[ "$(od -An -c -N 1 "$F" | tr -d ' ')" = w ] &&
	[ "$(od -An -c -j $((63 * 4096)) -N 1 "$F" | tr -d ' ')" = w ] && pass sync ||
	fail sync "$(cat "$W/out")"

# On a terminal: the bar, ending at 100 %.
if command -v script >/dev/null 2>&1; then
	script -qec "'$UPCCTL' daemon sync --socket '$S'" /dev/null >"$W/tty" 2>&1
	tr '\r' '\n' <"$W/tty" >"$W/out"
	has sync_tty "$W/out" "^\[#{40}\] 100%  [0-9]+ of [0-9]+ pages" && has sync_tty "$W/out" "^synced 1 files" &&
		pass sync_tty
else
	skip sync_tty "no script(1) to run upcctl on a terminal"
fi
expect sync_quiet 0 "$UPCCTL" daemon sync --quiet --socket "$S" && has sync_quiet "$W/out" "^synced 1 files" &&
	pass sync_quiet

expect drop 0 "$UPCCTL" daemon stats --json --socket "$S" && before=$(json pages_cached) &&
	expect drop 0 "$UPCCTL" daemon drop --socket "$S" && has drop "$W/out" "^dropped [0-9]+ pages$" &&
	n=$(sed -n 's/^dropped \([0-9]*\) pages$/\1/p' "$W/out") && [ "$n" -gt 0 ] &&
	expect drop 0 "$UPCCTL" daemon stats --json --socket "$S" && [ "$(json pages_cached)" = $((before - n)) ] &&
	pass drop || fail drop "cached $before before, dropped ${n:-?}, cached $(json pages_cached) after"
expect drop_writeback 0 "$UPCCTL" daemon drop --writeback --socket "$S" &&
	has drop_writeback "$W/out" "^dropped [0-9]+ pages$" && pass drop_writeback

if stop; then
	pass sigterm
else
	fail sigterm "upcd exit status $st"
fi
finish
