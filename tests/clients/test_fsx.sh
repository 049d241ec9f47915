#!/bin/sh
# SPDX-License-Identifier: MIT
# fsx-style random operations (tests/clients/fsx.c: read, write, map-read,
# map-write, truncate, punch hole, msync, fsync, remap), every operation
# checked against a shadow copy, the backing file checked after every fsync
# and at the end (issue 9, "Real clients"):
#  - fsx-upc, linked against the library (upc_map, upc_pread, ...): in
#    synchronous and asynchronous tracking, whether or not the shim exists;
#  - fsx on plain system calls: on the kernel and under upcache-run.
# Fixed seeds (printed, with the operation count) so a failure can be run
# again: tests/clients/fsx -S SEED -N OPS -l LEN; the long version adds seeds.
. "$(dirname "$0")/lib.sh"

if [ "$UPC_CLIENTS_LONG" = 1 ]; then
	seeds="1 2 3 4 5 6 7 8 $(date +%s)" ops=20000 len=262144
else
	seeds="1 2" ops=1500 len=131072
fi

for s in $seeds; do
	for t in sync async; do
		log=$W/fsx-upc.$t.$s
		if UPC_TEST_TRACK=$t timeout -k 10 "$UPC_CLIENT_TIMEOUT" \
			"$B/tests/clients/fsx-upc" -q -N $ops -l $len -S "$s" >"$log" 2>&1; then
			pass "fsx-upc.$t.seed$s"
		else
			fail "fsx-upc.$t.seed$s" "tests/clients/fsx-upc -N $ops -l $len -S $s (UPC_TEST_TRACK=$t)"
			show "$log"
		fi
	done
	for m in $(modes); do
		log=$W/fsx.$m.$s
		if run "$m" "$log" "$B/tests/clients/fsx" -q -N $ops -l $len -S "$s" "$W/fsx.$m.$s.file"; then
			pass "fsx.$m.seed$s"
		else
			fail "fsx.$m.seed$s" "tests/clients/fsx -N $ops -l $len -S $s ($m)"
			show "$log"
		fi
		rm -f "$W/fsx.$m.$s.file"
	done
done
finish
