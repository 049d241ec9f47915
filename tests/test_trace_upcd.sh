#!/bin/sh
# SPDX-License-Identifier: MIT
# upc-trace follows upcd's probes as it follows an embedded cache's:
# upc-trace -p on a running upcd's pid (upcd links the engine statically,
# so the probes are in its executable, not in a libupcache.so it maps:
# upc-trace looks there when the process maps no library) with --check,
# while a client (tests/upcd-client) maps 16 pages of a file, faults every
# page in, writes each and msyncs.  Checked: the fault events (missing and
# write-protect) and a wb_submit of the client's file (its inode) appear,
# fired by the daemon's process, and the checker passes.
# Skips with the reason where upc-trace was not built, is not root, or BPF
# cannot be loaded here (upc-trace --probe), and where upcache cannot run.
. "$(dirname "$0")/sh-lib.sh"

UPCCTL=$B/tools/upcctl
UPCD=$B/daemon/upcd
TRACE=$B/tools/upc-trace
CLIENT=$B/tests/upcd-client
W=$(mktemp -d "${TMPDIR:-/tmp}/upc-trace-upcd.XXXXXX") || exit 99
S=$W/upcd.sock
F=$W/data
pid= tpid=
cleanup() {
	[ -n "$tpid" ] && kill -KILL "$tpid" 2>/dev/null
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	rm -rf "$W"
}
trap cleanup EXIT

if [ ! -x "$TRACE" ]; then
	skip upcd "upc-trace was not built (configure needs libbpf-dev, libelf-dev, bpftool, clang, systemtap-sdt-dev and /sys/kernel/btf/vmlinux)"
	finish
fi
if [ "$(id -u)" != 0 ]; then
	skip upcd "not root: upc-trace needs CAP_BPF and CAP_PERFMON"
	finish
fi
"$TRACE" --probe >"$W/probe" 2>&1
st=$?
if [ $st = 77 ]; then
	skip upcd "BPF tracing is not available here: $(head -n 1 "$W/probe")"
	finish
elif [ $st != 0 ]; then
	fail upcd "upc-trace --probe: exit $st: $(cat "$W/probe")"
	finish
fi
if ! "$UPCCTL" probe --json >/dev/null 2>&1; then
	skip upcd "upcache cannot create a cache here (upcctl probe): upcd cannot start"
	finish
fi

"$UPCD" --foreground --socket "$S" &
pid=$!
i=0
until "$UPCCTL" daemon status --socket "$S" >/dev/null 2>&1; do
	i=$((i + 1))
	if [ $i -ge 200 ] || ! kill -0 "$pid" 2>/dev/null; then
		fail upcd "upcd --foreground --socket $S did not answer within 20 s"
		finish
	fi
	sleep 0.1
done

"$TRACE" -p "$pid" --check >"$W/trace" 2>"$W/terr" &
tpid=$!
i=0
until grep -q "probes attached" "$W/terr"; do
	i=$((i + 1))
	if [ $i -ge 300 ] || ! kill -0 "$tpid" 2>/dev/null; then
		fail upcd "upc-trace -p $pid did not attach within 30 s: $(cat "$W/terr")"
		finish
	fi
	sleep 0.1
done

dd if=/dev/zero of="$F" bs=4096 count=16 2>/dev/null
ino=$(stat -c %i "$F")
if ! echo | "$CLIENT" "$S" "$F" 16 --write w --msync >"$W/cout" 2>"$W/cerr"; then
	fail upcd "the client failed: $(cat "$W/cerr")"
	finish
fi
sleep 0.5		# the ring buffer's last events reach upc-trace
kill -INT "$tpid"
wait "$tpid"
st=$?
tpid=

# TIME PID TID COMM EVENT DETAILS, the events of the daemon's process on the client's file
awk -v p="$pid" -v ino="$ino" '$2 == p && / ino / { for (i = 6; i < NF; i++) if ($i == "ino" && $(i + 1) == ino) print $5 }' \
	"$W/trace" | sort | uniq -c >"$W/kinds"
if [ $st = 0 ] && grep -q " fault$" "$W/kinds" && grep -q " wb_submit$" "$W/kinds" &&
	awk -v p="$pid" -v ino="$ino" '$2 == p && $5 == "fault" && $6 == "missing" && $8 == ino' "$W/trace" | grep -q . &&
	awk -v p="$pid" -v ino="$ino" '$2 == p && $5 == "fault" && $6 == "wp" && $8 == ino' "$W/trace" | grep -q . &&
	grep -q "check passed" "$W/terr"; then
	pass upcd
else
	fail upcd "upc-trace exit $st; events of ino $ino from pid $pid: $(tr '\n' ' ' <"$W/kinds")"
	sed 's/^/  stderr: /' "$W/terr"
	head -n 40 "$W/trace" | sed 's/^/  trace: /'
fi

kill -TERM "$pid"
wait "$pid"
pid=
finish
