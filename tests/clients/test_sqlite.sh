#!/bin/sh
# SPDX-License-Identifier: MIT
# SQLite on the kernel and under upcache-run (issue 9, "Real clients"): the
# sqlite3 shell runs a write-heavy script (tests/clients/sqlite-work.sh:
# inserts, updates, deletes, an index build, VACUUM) with PRAGMA mmap_size
# covering the database (SQLite then reads the database through a shared
# mapping, and in WAL mode maps the -shm wal-index too), in WAL and in
# rollback-journal (DELETE) mode, twice in a row (a second process reopens
# the database).  Each run: PRAGMA integrity_check says ok, the row counts
# are as on the kernel, and .dump (run the same way) is identical to the
# kernel run's; .dump on the kernel of what a shim run left, too.
. "$(dirname "$0")/lib.sh"
S=$(dirname "$0")

if ! command -v sqlite3 >/dev/null; then
	skip sqlite "sqlite3 is missing (scripts/install-deps)"
	finish
fi
if [ "$UPC_CLIENTS_LONG" = 1 ]; then rows=60000; else rows=4000; fi

printf 'PRAGMA mmap_size=1073741824;\n.dump\n' >"$W/dump.sql"
for journal in wal delete; do
	sh "$S/sqlite-work.sh" $journal $rows 0 >"$W/work-$journal-1.sql"
	sh "$S/sqlite-work.sh" $journal $rows $rows >"$W/work-$journal-2.sql"
	for m in $(modes); do
		d=$W/$journal.$m
		db=$d.db
		ok=1
		for phase in 1 2; do
			if ! run "$m" "$d.run$phase" sqlite3 -bail "$db" <"$W/work-$journal-$phase.sql"; then
				fail "$journal.$m.run$phase" "sqlite3 failed"
				show "$d.run$phase"
				ok=0
				break
			fi
			if [ "$(grep -c '^ok$' "$d.run$phase")" != 1 ] || grep -q -i 'error' "$d.run$phase"; then
				fail "$journal.$m.integrity$phase" "PRAGMA integrity_check is not ok"
				show "$d.run$phase"
				ok=0
			fi
			# the value PRAGMA mmap_size=N took, and PRAGMA mmap_size at the end
			if [ "$(grep -c -x 1073741824 "$d.run$phase")" != 2 ]; then
				fail "$journal.$m.mmap$phase" "PRAGMA mmap_size did not take (is the database mapped?)"
				show "$d.run$phase"
				ok=0
			fi
		done
		[ $ok = 1 ] && pass "$journal.$m.integrity_check"
		grep '^rows|' "$d.run2" >"$d.rows"
		run "$m" "$d.dump" sqlite3 -bail "$db" <"$W/dump.sql" ||
			{ fail "$journal.$m.dump" "sqlite3 .dump failed"; show "$d.dump"; }
		sqlite3 -bail "$db" <"$W/dump.sql" >"$d.kdump" 2>&1 ||
			fail "$journal.$m.kdump" "sqlite3 .dump on the kernel failed"
		echo 'PRAGMA integrity_check;' | sqlite3 "$db" >"$d.kcheck" 2>&1
		check "$journal.$m.integrity-on-kernel" grep -q -x ok "$d.kcheck"
		[ "$m" = kernel ] && continue
		k=$W/$journal.kernel
		same "$journal.$m.rows" "$k.rows" "$d.rows"
		same "$journal.$m.dump" "$k.dump" "$d.dump"
		same "$journal.$m.dump-on-kernel" "$k.dump" "$d.kdump"
	done
done
finish
