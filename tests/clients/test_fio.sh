#!/bin/sh
# SPDX-License-Identifier: MIT
# fio's mmap engine on the kernel and under upcache-run (issue 9, "Real
# clients"): a sequential write job, a sequential read job over what it
# wrote, and a random read/write job, each with --verify=crc32c (every
# block carries a header and a checksum that fio checks when it reads it
# back) and --verify_fatal: fio must exit 0 and report no verify error.
# The write and randrw jobs run two processes each (fio forks its jobs) on
# files of their own; the read job reads the write job's files in a new fio
# process, so what is read was written back to the file.
. "$(dirname "$0")/lib.sh"

if ! command -v fio >/dev/null; then
	skip fio "fio is missing (scripts/install-deps)"
	finish
fi
if [ "$UPC_CLIENTS_LONG" = 1 ]; then size=256m; else size=16m; fi

common="--ioengine=mmap --size=$size --numjobs=2 --group_reporting=1 --verify=crc32c
--verify_fatal=1 --randrepeat=1 --randseed=4242 --unlink=0 --verify_state_save=0"

# fio_job MODE NAME ARGS...: run one fio job; pass if it exits 0 with no verify error.
fio_job() {
	m=$1 name=$2
	shift 2
	log=$W/$name.$m
	# shellcheck disable=SC2086
	if run "$m" "$log" fio --name="$name" --directory="$W/$m" $common "$@" &&
		! grep -q -i -E 'verify.*(fail|bad|error)|crc32c.*wanted|err= *[1-9]' "$log"; then
		pass "$name.$m"
	else
		fail "$name.$m" "fio $name failed or reported a verify error"
		show "$log"
	fi
}

for m in $(modes); do
	mkdir -p "$W/$m"
	fio_job "$m" seqwrite --rw=write --bs=64k
	# the same files (fio names them seqwrite.N.0), read back and verified
	fio_job "$m" seqread --rw=read --bs=64k --filename_format='seqwrite.$jobnum.0' \
		--do_verify=1
	fio_job "$m" randrw --rw=randrw --rwmixread=50 --bs=4k --verify_backlog=64
	rm -rf "${W:?}/$m"
done
finish
