#!/bin/sh
# SPDX-License-Identifier: MIT
# upcache-run --shared (issue 10): unmodified programs on upcd's cache.
# Each run starts its own upcd --foreground --socket in a temporary
# directory (SIGKILL if the test dies first), and uses a registry of its own
# (UPCACHE_RUN_REGISTRY).  Checks:
#  - usage: --socket without --shared, --mem-limit or --tracking with
#    --shared (the daemon's options): exit status 2;
#  - no daemon (--socket, and $UPC_SOCKET): exit status 125 and the message,
#    before the program runs;
#  - tests/preload-prog's cases of test_preload.c that hold as they are;
#  - two programs (tests/preload-prog share-a, share-b) map one file: each
#    sees the other's stores and pwrites through its own mapping, at once,
#    and the log shows upcd's cache and upcache mappings;
#  - kill -9 of a writer after it said it wrote (64 pages through its
#    mapping, a pwrite; nothing synced): everything is in the file after the
#    daemon's SIGTERM (read on the kernel);
#  - kill -9 of upcd under a writer (preload-prog away-writer), which
#    serves itself and writes, and a new upcd: its calls after the restart
#    do not wait for $UPC_RECONNECT, and its writes are in the file;
#  - one program after another (preload-prog later-a, later-b): the second
#    reads and writes the file before it maps it, and meets the first's
#    store, which upcd has not written back; its write is what the file
#    has after the daemon's SIGTERM;
#  - the registry: a program with a cache of its own (no --shared) and one
#    under --shared refuse each other's mappings and writes (EAGAIN), both
#    ways (preload-prog hold, second);
#  - SQLite in WAL mode with mmap_size (tests/preload-sqlite): a writer and a
#    reader under --shared at the same time, both succeed and every commit
#    is there;
#  - LMDB (tests/clients/lmdb-work), default mode and MDB_WRITEMAP, twice on
#    one environment; and a writer of synced commits killed with kill -9:
#    every commit it was told was synced is there, under --shared and, after
#    the daemon's SIGTERM, on the kernel.
. "$(dirname "$0")/sh-lib.sh"

RUN=$B/preload/upcache-run
UPCD=$B/daemon/upcd
UPCCTL=$B/tools/upcctl
PROG=$B/tests/preload-prog
SQL=$B/tests/preload-sqlite
LMDB=$B/tests/clients/lmdb-work
# not tmpfs: the shim leaves files of memory file systems to the kernel
W=$(mktemp -d /var/tmp/upc-run-shared.XXXXXX) || exit 99
S=$W/s
pid=
cleanup() {
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	if [ "$nfail" -gt 0 ]; then echo "work directory kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
unset UPC_SOCKET UPCACHE_RUN_SHARED UPCACHE_RUN_LOG
export UPCACHE_RUN_REGISTRY="$W/registry"

if [ ! -x "$RUN" ] || [ ! -x "$PROG" ]; then
	skip all "upcache-run or tests/preload-prog is not built"
	finish
fi
if ! "$UPCCTL" probe --json >/dev/null 2>&1; then
	skip all "upcache cannot create a cache here (upcctl probe): upcd cannot start"
	finish
fi

# expect NAME STATUS CMD...: CMD exits STATUS; its output in $W/out, $W/err.
expect() {
	name=$1 want=$2
	shift 2
	"$@" >"$W/out" 2>"$W/err"
	got=$?
	[ "$got" = "$want" ] && return 0
	fail "$name" "exit status $got, not $want: $*"
	sed 's/^/  stdout: /' "$W/out"
	sed 's/^/  stderr: /' "$W/err"
	return 1
}

# start: upcd on $S; waits until it answers (20 s at most).
start() {
	"$UPCD" --foreground --socket "$S" 2>>"$W/upcd.log" &
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

# stop: SIGTERM, which writes everything back; upcd exits 0.
stop() {
	kill -TERM "$pid"
	wait "$pid"
	st=$?
	pid=
	[ "$st" = 0 ] || fail upcd_stop "upcd exited $st at SIGTERM"
}

# waitfile F: until F exists (60 s at most).
waitfile() {
	i=0
	while [ ! -e "$1" ] && [ $i -lt 600 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	[ -e "$1" ]
}

show() { sed 's/^/  /' "$1"; }

# ---- usage and no daemon
expect usage_socket 2 "$RUN" --socket="$S" true &&
	grep -q -- "--socket is for --shared" "$W/err" && pass usage_socket
expect usage_mem_limit 2 "$RUN" --shared --socket="$S" --mem-limit=64m true &&
	grep -q "the daemon's to set" "$W/err" && pass usage_mem_limit
expect usage_tracking 2 "$RUN" --shared --tracking=async true && pass usage_tracking
expect no_daemon 125 "$RUN" --shared --socket="$S" "$PROG" mkfile "$W/never" 1 &&
	grep -qF "upcache-run: --shared: no upcd on $S (No such file or directory)" "$W/err" &&
	[ ! -e "$W/never" ] && pass no_daemon
expect no_daemon_env 125 env UPC_SOCKET="$W/elsewhere" "$RUN" --shared true &&
	grep -qF "no upcd on $W/elsewhere" "$W/err" && pass no_daemon_env

if ! start; then
	fail start "upcd --foreground --socket $S did not answer within 20 s"
	show "$W/upcd.log"
	finish
fi

# ---- two programs, one cache
F=$W/share
"$PROG" mkfile "$F" 4
UPCACHE_RUN_LOG=$W/share.log "$RUN" --shared --socket="$S" "$PROG" share-a "$F" >"$W/a.out" 2>&1 &
a=$!
UPCACHE_RUN_LOG=$W/share.log UPC_SOCKET=$S "$RUN" --shared "$PROG" share-b "$F" >"$W/b.out" 2>&1
bst=$?
wait $a
ast=$?
if [ $ast = 0 ] && [ $bst = 0 ] && [ "$(grep -c "cache created: upcd's" "$W/share.log")" = 2 ] &&
	[ "$(grep -c "/share (offset 0, .*upcache mapping at" "$W/share.log")" -ge 2 ]; then
	pass two_programs_see_each_others_writes
else
	fail two_programs_see_each_others_writes "share-a $ast, share-b $bst"
	show "$W/a.out"
	show "$W/b.out"
	show "$W/share.log"
fi

# ---- a read-only reopen of a file the program has open read-write (LMDB does it)
F=$W/ro
"$PROG" mkfile "$F" 1
if "$RUN" --shared --socket="$S" "$PROG" ro-reopen "$F" >"$W/ro.out" 2>&1; then
	pass a_read_only_reopen_maps_and_stays_read_only
else
	fail a_read_only_reopen_maps_and_stays_read_only "preload-prog ro-reopen"
	show "$W/ro.out"
fi

# ---- the embedded mode's cases of tests/test_preload.c that hold in shared
# mode as they are (a file of their own each: the daemon's cache outlives
# the programs, and a file rewritten behind it would read stale)
for c in size protect advise remap unmap exec spawn _exit kernel-access threads; do
	F=$W/case-$c
	"$PROG" mkfile "$F" 16
	if UPCACHE_RUN_LOG=$W/case-$c.log "$RUN" --shared --socket="$S" "$PROG" "$c" "$F" >"$W/case-$c.out" 2>&1 &&
		grep -q "upcache mapping at" "$W/case-$c.log"; then
		pass "preload_case_$c"
	else
		fail "preload_case_$c" "preload-prog $c under --shared"
		show "$W/case-$c.out"
	fi
done

# ---- kill -9 of a writer; then the daemon's SIGTERM writes back what it left
K=$W/killed
"$PROG" mkfile "$K" 64
"$RUN" --shared --socket="$S" "$PROG" kill-writer "$K" >"$W/k.out" 2>&1 &
k=$!
if waitfile "$K.ready" && [ -s "$K.ready" ]; then
	kill -KILL "$(cat "$K.ready")"
	wait $k
	kst=$?
	stop
	if [ $kst = 137 ] && "$PROG" kill-check "$K" >"$W/kc.out" 2>&1; then
		pass a_killed_writers_data_reaches_the_file
	else
		fail a_killed_writers_data_reaches_the_file "writer status $kst (137: killed)"
		show "$W/k.out"
		show "$W/kc.out"
	fi
else
	fail a_killed_writers_data_reaches_the_file "the writer never said it wrote"
	kill -KILL $k 2>/dev/null
	show "$W/k.out"
	stop
fi
start || { fail restart "upcd did not start again"; finish; }

# ---- one program after another: the second's I/O before its first mapping meets the first's pages
F=$W/later
"$PROG" mkfile "$F" 4
if "$RUN" --shared --socket="$S" "$PROG" later-a "$F" >"$W/la.out" 2>&1 &&
	"$RUN" --shared --socket="$S" "$PROG" later-b "$F" >"$W/lb.out" 2>&1; then
	lst=0
else
	lst=1
fi
stop
if [ $lst = 0 ] && "$PROG" later-check "$F" >"$W/lc.out" 2>&1; then
	pass io_before_the_first_mapping_meets_upcds_pages
else
	fail io_before_the_first_mapping_meets_upcds_pages "a later program's pread and pwrite went by upcd's cache"
	show "$W/la.out"
	show "$W/lb.out"
	show "$W/lc.out"
fi
start || { fail restart "upcd did not start again"; finish; }

# ---- kill -9 of upcd under a writer (sync tracking: it serves itself), a new upcd: no wait for $UPC_RECONNECT
F=$W/away
"$PROG" mkfile "$F" 4
UPC_RECONNECT=60 "$RUN" --shared --socket="$S" "$PROG" away-writer "$F" >"$W/aw.out" 2>&1 &
aw=$!
if waitfile "$F.ready"; then
	kill -KILL "$pid"
	wait "$pid"
	pid=
	: >"$F.killed"
	waitfile "$F.wrote"
	start || { fail restart "upcd did not start again"; finish; }
	: >"$F.back"
fi
wait $aw
awst=$?
stop
if [ $awst = 0 ] && "$PROG" away-check "$F" >"$W/ac.out" 2>&1; then
	pass a_writer_hands_back_to_a_new_daemon_at_once
else
	fail a_writer_hands_back_to_a_new_daemon_at_once "the writer: status $awst (142: its 60 s alarm: it waited)"
	show "$W/aw.out"
	[ -e "$W/ac.out" ] && show "$W/ac.out"
fi
start || { fail restart "upcd did not start again"; finish; }

# ---- the daemon gone between upcache-run's check and the first mmap: ENODEV, said so
F=$W/gone
"$PROG" mkfile "$F" 4
"$RUN" --shared --socket="$S" "$PROG" share-b "$F" >"$W/gone.out" 2>&1 &
g=$!
sleep 0.2
stop
touch "$F.ready"
wait $g
gst=$?
if [ $gst = 1 ] && grep -qF "(errno No such device)" "$W/gone.out" &&
	grep -q -- "--shared: no cache from upcd at $S" "$W/gone.out"; then
	pass no_daemon_at_the_first_mmap_is_enodev
else
	fail no_daemon_at_the_first_mmap_is_enodev "share-b exit status $gst (want 1)"
	show "$W/gone.out"
fi
start || { fail restart "upcd did not start again"; finish; }

# ---- the registry: a cache of a program's own and upcd's refuse each other
for order in "own shared" "shared own"; do
	set -- $order
	F=$W/reg-$1
	"$PROG" mkfile "$F" 4
	opt1=; opt2=
	[ "$1" = shared ] && opt1="--shared --socket=$S"
	[ "$2" = shared ] && opt2="--shared --socket=$S"
	# shellcheck disable=SC2086
	"$RUN" $opt1 "$PROG" hold "$F" >"$W/hold.out" 2>&1 &
	h=$!
	if ! waitfile "$F.ready"; then
		fail "registry_$1_then_$2" "the first never cached the file"
		kill $h
		wait $h
		continue
	fi
	# shellcheck disable=SC2086
	"$RUN" $opt2 "$PROG" second "$F" >"$W/second.out" 2>&1
	sst=$?
	touch "$F.done"
	wait $h
	hst=$?
	if [ $sst = 0 ] && [ $hst = 0 ] && grep -q "fails with EAGAIN" "$W/second.out"; then
		pass "registry_$1_then_$2"
	else
		fail "registry_$1_then_$2" "hold $hst, second $sst"
		show "$W/hold.out"
		show "$W/second.out"
	fi
done

# ---- the registry's lock held for more than 10 s: the mmap is refused (EAGAIN), said so
if command -v flock >/dev/null; then
	F=$W/locked
	"$PROG" mkfile "$F" 1
	mkdir -p "$UPCACHE_RUN_REGISTRY"
	flock "$UPCACHE_RUN_REGISTRY/.lock" sleep 16 &
	fl=$!
	i=0	# until flock(1) holds it (under load it may start late)
	while flock -n "$UPCACHE_RUN_REGISTRY/.lock" true && [ $i -lt 100 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	"$RUN" --shared --socket="$S" "$PROG" take "$F" >"$W/locked.out" 2>&1
	lst=$?
	wait $fl
	if [ $lst = 1 ] && grep -q "registry .* cannot be used (Connection timed out)" "$W/locked.out" &&
		grep -qF "(errno Resource temporarily unavailable)" "$W/locked.out"; then
		pass a_registry_lock_held_too_long_refuses
	else
		fail a_registry_lock_held_too_long_refuses "take exit status $lst (want 1)"
		show "$W/locked.out"
	fi
else
	skip a_registry_lock_held_too_long_refuses "no flock(1)"
fi

# ---- SQLite: a writer and a reader at once, one cache
if [ -x "$SQL" ]; then
	D=$W/sql.db
	n=200
	"$RUN" --shared --socket="$S" "$SQL" writer "$D" $n >"$W/sw.out" 2>&1 &
	sw=$!
	# the reader starts once the writer's table exists (it said "ready"); a
	# fixed delay made the reader find no table under make -j2's load
	i=0
	while [ $i -lt 300 ] && ! grep -qx ready "$W/sw.out" 2>/dev/null && kill -0 $sw 2>/dev/null; do
		sleep 0.05
		i=$((i + 1))
	done
	"$RUN" --shared --socket="$S" "$SQL" reader "$D" 100 >"$W/sr.out" 2>&1
	srt=$?
	wait $sw
	swt=$?
	stop
	"$SQL" count "$D" >"$W/sc.out" 2>&1
	sct=$?
	if [ $swt = 0 ] && [ $srt = 0 ] && [ $sct = 0 ] && grep -qx "rows $n" "$W/sc.out" &&
		grep -qx "committed $n" "$W/sw.out"; then
		pass sqlite_writer_and_reader
	else
		fail sqlite_writer_and_reader "writer $swt, reader $srt, count $sct"
		show "$W/sw.out"
		show "$W/sr.out"
		show "$W/sc.out"
	fi
	start || { fail restart "upcd did not start again"; finish; }
else
	skip sqlite_writer_and_reader "tests/preload-sqlite is not built (no SQLite)"
fi

# ---- LMDB
if [ -x "$LMDB" ]; then
	for c in default: writemap:-w; do
		name=${c%%:*} opts=${c#*:}
		d=$W/lmdb-$name
		mkdir -p "$d"
		ok=1
		for phase in 1 2; do
			# shellcheck disable=SC2086
			if ! "$RUN" --shared --socket="$S" "$LMDB" -n 60 -b 20 $opts "$d" >"$d.run$phase" 2>&1; then
				fail "lmdb_$name" "lmdb-work $opts, run $phase"
				show "$d.run$phase"
				ok=0
				break
			fi
		done
		[ $ok = 1 ] && pass "lmdb_$name"
	done
	d=$W/lmdb-kill
	mkdir -p "$d"
	"$RUN" --shared --socket="$S" "$LMDB" -K "$d.progress" -w "$d" >"$d.writer" 2>&1 &
	lw=$!
	i=0
	while [ $i -lt 600 ]; do
		[ "$( { wc -l <"$d.progress"; } 2>/dev/null || echo 0)" -ge 15 ] && break
		kill -0 $lw 2>/dev/null || break
		sleep 0.1
		i=$((i + 1))
	done
	lp=$(cat "$d.progress.pid" 2>/dev/null)
	if [ -n "$lp" ] && [ "$(wc -l <"$d.progress")" -ge 15 ]; then
		kill -KILL "$lp"
		wait $lw
		if "$RUN" --shared --socket="$S" "$LMDB" -V "$d.progress" "$d" >"$d.verify" 2>&1; then
			pass lmdb_killed_writer_shared
		else
			fail lmdb_killed_writer_shared "synced commits lost after kill -9"
			show "$d.verify"
		fi
		stop
		if "$LMDB" -V "$d.progress" "$d" >"$d.kverify" 2>&1; then
			pass lmdb_killed_writer_on_the_kernel
		else
			fail lmdb_killed_writer_on_the_kernel "synced commits lost after kill -9 and SIGTERM"
			show "$d.kverify"
		fi
	else
		fail lmdb_killed_writer "the writer did not reach 15 synced commits"
		kill -KILL $lw 2>/dev/null
		show "$d.writer"
		stop
	fi
else
	skip lmdb "tests/clients/lmdb-work is not built (no liblmdb)"
fi
[ -n "$pid" ] && stop
finish
