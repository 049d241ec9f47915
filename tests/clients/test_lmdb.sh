#!/bin/sh
# SPDX-License-Identifier: MIT
# LMDB on the kernel and under upcache-run (issue 9, "Real clients"):
# tests/clients/lmdb-work (a deterministic workload that checks itself:
# batched puts and deletes, cursor scans against a model, mdb_env_sync),
# in LMDB's default mode (read-only map, writes by pwrite) and with
# MDB_WRITEMAP, each with a 1 TiB map, with MDB_FIXEDMAP, and with map
# resizes (mdb_env_set_mapsize) during the run.  Each configuration runs
# twice in a row on the same environment (a second process reopens it:
# with MDB_FIXEDMAP at the address recorded by the first).  Then the output
# of mdb_stat -a, mdb_stat -e and mdb_dump -a (run the same way) must be
# identical to the kernel run's, and so must mdb_dump on the kernel of what
# a shim run left.  The only exclusion: with MDB_FIXEDMAP the map address
# (mdb_dump's mapaddr=, mdb_stat's "Map address:") is wherever the first
# run's mmap put it, which differs from run to run on the kernel alone
# (ASLR).  data.mdb itself is not compared byte for byte: LMDB leaves
# uninitialised bytes in unused parts of some pages (two kernel runs of the
# same workload differ in 5 bytes of page 60, a heap address).
# Last, kill -9 of a writer after synced commits: every commit it was told
# was synced must be there, on the shim and on the kernel.
. "$(dirname "$0")/lib.sh"

WORK=$B/tests/clients/lmdb-work
if [ ! -x "$WORK" ]; then
	skip lmdb "tests/clients/lmdb-work is not built (configure found no liblmdb: scripts/install-deps)"
	finish
fi
for p in mdb_dump mdb_stat; do
	if ! command -v $p >/dev/null; then
		skip lmdb "$p is missing (lmdb-utils: scripts/install-deps)"
		finish
	fi
done

if [ "$UPC_CLIENTS_LONG" = 1 ]; then ntxn=1500 batch=60 killafter=200; else ntxn=100 batch=30 killafter=15; fi

# name:options
configs="default-1T:-m1T writemap-1T:-w_-m1T default-fixedmap:-f writemap-fixedmap:-w_-f
default-resize:-r writemap-resize:-w_-r"

for c in $configs; do
	name=${c%%:*}
	opts=$(echo "${c#*:}" | tr _ ' ')
	for m in $(modes); do
		d=$W/$name.$m
		mkdir -p "$d"
		ok=1
		for phase in 1 2; do
			# shellcheck disable=SC2086
			run "$m" "$d.run$phase" "$WORK" -n "$ntxn" -b "$batch" $opts "$d"
			rc=$?
			# MDB_FIXEDMAP: a second process whose address space already
			# has something at the recorded address gets EBUSY from
			# mdb_env_open (LMDB's documented answer; nothing was
			# written).  Seen once in CI under the shim (820a46f,
			# shim-sync, phase 2), never in 40+40 runs here: said, and
			# tried again in a new process, at most twice.
			for retry in 1 2; do
				case $opts in *-f*) ;; *) break ;; esac
				if [ "$rc" = 0 ] || [ "$phase" != 2 ] ||
					! grep -q 'mdb_env_open.*Device or resource busy' "$d.run$phase"; then
					break
				fi
				echo "note: $name.$m.run$phase: the MDB_FIXEDMAP address was taken (EBUSY): again ($retry)"
				# shellcheck disable=SC2086
				run "$m" "$d.run$phase" "$WORK" -n "$ntxn" -b "$batch" $opts "$d"
				rc=$?
			done
			if [ "$rc" != 0 ]; then
				fail "$name.$m.run$phase" "lmdb-work $opts (phase $phase) failed"
				show "$d.run$phase"
				ok=0
				break
			fi
		done
		[ $ok = 1 ] || continue
		pass "$name.$m.workload"
		run "$m" "$d.stat" mdb_stat -a "$d" || { fail "$name.$m.stat" "mdb_stat -a"; show "$d.stat"; }
		run "$m" "$d.env" mdb_stat -e "$d" || { fail "$name.$m.env" "mdb_stat -e"; show "$d.env"; }
		run "$m" "$d.dump" mdb_dump -a "$d" || { fail "$name.$m.dump" "mdb_dump -a"; show "$d.dump"; }
		mdb_dump -a "$d" >"$d.kdump" 2>&1 || fail "$name.$m.kdump" "mdb_dump -a on the kernel"
		case $opts in
		*-f*)
			# The one legitimate difference: the map address (see above).
			for f in dump kdump env; do
				grep -q -E '^mapaddr=0x|Map address: 0x' "$d.$f" ||
					fail "$name.$m.$f" "MDB_FIXEDMAP, but no map address recorded"
				sed -i -E 's/^mapaddr=0x[0-9a-f]+$/mapaddr=(excluded)/; s/Map address: 0x[0-9a-f]+$/Map address: (excluded)/' "$d.$f"
			done
			;;
		esac
		[ "$m" = kernel ] && continue
		k=$W/$name.kernel
		[ -f "$k.env" ] || { fail "$name.$m" "no kernel run to compare with"; continue; }
		same "$name.$m.mdb_stat-a" "$k.stat" "$d.stat"
		same "$name.$m.mdb_stat-e" "$k.env" "$d.env"
		same "$name.$m.mdb_dump" "$k.dump" "$d.dump"
		same "$name.$m.mdb_dump-on-kernel" "$k.dump" "$d.kdump"
	done
done

# kill -9 of a writer after synced commits.
for c in default: writemap:-w; do
	name=kill-${c%%:*}
	opts=${c#*:}
	for m in $(modes); do
		d=$W/$name.$m
		mkdir -p "$d"
		rm -f "$d.progress" "$d.progress.pid"
		# shellcheck disable=SC2086
		run "$m" "$d.writer" "$WORK" -K "$d.progress" $opts "$d" &
		bg=$!
		n=0 t=0
		while [ "$t" -lt 600 ]; do
			n=$( { wc -l <"$d.progress"; } 2>/dev/null || echo 0)
			[ "$n" -ge "$killafter" ] && break
			kill -0 $bg 2>/dev/null || break
			sleep 0.1
			t=$((t + 1))
		done
		pid=$(cat "$d.progress.pid" 2>/dev/null)
		if [ "$n" -lt "$killafter" ] || [ -z "$pid" ]; then
			fail "$name.$m.writer" "the writer did not reach $killafter synced commits (it made $n)"
			show "$d.writer"
			kill -9 "$pid" $bg 2>/dev/null
			wait $bg
			continue
		fi
		kill -9 "$pid"
		wait $bg
		echo "$name.$m: writer killed after $(wc -l <"$d.progress") synced commits"
		if run "$m" "$d.verify" "$WORK" -V "$d.progress" "$d"; then
			pass "$name.$m.verify"
		else
			fail "$name.$m.verify" "synced commits lost after kill -9 ($m)"
			show "$d.verify"
		fi
		if [ "$m" != kernel ]; then
			if run kernel "$d.kverify" "$WORK" -V "$d.progress" "$d"; then
				pass "$name.$m.verify-on-kernel"
			else
				fail "$name.$m.verify-on-kernel" "synced commits lost after kill -9 (read on the kernel)"
				show "$d.kverify"
			fi
		fi
	done
done
finish
