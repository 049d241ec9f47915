#!/bin/bash
# fio (mmap engine, crc32c verify; write, read-verify, randrw: 2 jobs x 64 MiB) and
# LMDB (tests/clients/lmdb-work -w, 2 x 300 transactions) under upcache-run --shared,
# upcd --mem-limit=8M, each step given 120 s.  B=<build tree> MODES="sync async nozaps slowzaps".
# nozaps: --async, with clients that hand upcd no reclaim channel (UPC_DEBUG=no-zaps), so that
# every page they map writable is evicted from under them (lib/pagecache/capture.c).
# slowzaps: --async, with clients that answer each zap 150-450 ms late (UPC_DEBUG=slow-zaps), after
# upcd stopped waiting for them: their answers are read late (lib/pagecache/zap.c, zap_late_poll).
# UPCD_ARGS: more options for upcd (--fault-handlers=per-cpu, say).
# Needs tests/clients/lmdb-work built (make check).  Runs of 2026-12-04 and -05: see the issue notes.
# fio (mmap engine, crc32c verify) and LMDB (writemap) under upcache-run --shared,
# upcd with an 8 MiB limit, files 8x that; both tracking modes.
B=${B:-/work/main}
for mode in ${MODES:-sync async nozaps}; do
  D=$(mktemp -d /tmp/rs.XXXXXX); chmod 0711 $D
  extra="${UPCD_ARGS:-}"; [ $mode != sync ] && extra="$extra --async"
  cenv=""; [ $mode = nozaps ] && cenv="env UPC_DEBUG=no-zaps"
  [ $mode = slowzaps ] && cenv="env UPC_DEBUG=slow-zaps"
  $B/daemon/upcd --foreground --verbose --socket $D/s --mode 0666 --mem-limit=8M $extra 2>$D/upcd.log &
  up=$!
  for i in $(seq 100); do [ -S $D/s ] && break; sleep 0.05; done
  R="$cenv $B/preload/upcache-run --shared --socket=$D/s"
  mkdir -p $D/f
  common="--ioengine=mmap --size=64m --numjobs=2 --group_reporting=1 --verify=crc32c --verify_fatal=1 --randrepeat=1 --randseed=4242 --unlink=0 --verify_state_save=0 --directory=$D/f"
  ok=1; t0=$(date +%s)
  timeout 120 $R fio --name=seqwrite $common --rw=write --bs=64k >$D/fio1 2>&1 || ok=0
  timeout 120 $R fio --name=seqread $common --rw=read --bs=64k --filename_format='seqwrite.$jobnum.0' --do_verify=1 >$D/fio2 2>&1 || ok=0
  timeout 120 $R fio --name=randrw $common --rw=randrw --rwmixread=50 --bs=4k --verify_backlog=64 >$D/fio3 2>&1 || ok=0
  grep -qiE 'verify.*(fail|bad|error)|crc32c.*wanted|err= *[1-9]' $D/fio1 $D/fio2 $D/fio3 && ok=0
  st=$($B/tools/upcctl daemon status --socket $D/s | grep -E "^(cached|mem-limit)" | tr '\n' ' ')
  echo "$mode fio ok=$ok in $(( $(date +%s) - t0 )) s; after: $st"
  mkdir -p $D/l
  lok=1; t1=$(date +%s)
  timeout 120 $R $B/tests/clients/lmdb-work -n 300 -b 60 -w -m1T $D/l >$D/l1 2>&1 || lok=0
  timeout 120 $R $B/tests/clients/lmdb-work -n 300 -b 60 -w -m1T $D/l >$D/l2 2>&1 || lok=0
  mdb_stat -a $D/l >/dev/null 2>&1 || lok=0
  st=$($B/tools/upcctl daemon status --socket $D/s | grep -E "^cached" | tr '\n' ' ')
  st="$st$($B/tools/upcctl daemon stats --socket $D/s | grep -E "^ *(reclaim|errors)" | sed 's/  */ /g' | tr '\n' ' ')"
  echo "$mode lmdb ok=$lok in $(( $(date +%s) - t1 )) s size=$(du -sh $D/l | cut -f1) after: $st"
  kill -TERM $up; wait $up; echo "$mode upcd exit $?"
  echo "$mode upcd log: $(grep -c 'answered a zap' $D/upcd.log) slow answers, $(grep -c 'no answer to a zap' $D/upcd.log) given up; $(grep -m1 'fault handlers' $D/upcd.log)"
  rm -rf $D
done
