#!/bin/sh
# SPDX-License-Identifier: MIT
# A short run of the libFuzzer target of the protocol parser
# (daemon/fuzz-proto.c) on the seed corpus (daemon/fuzz-seeds.c): every
# seed, then mutations for UPC_FUZZ_SECONDS (default 10; make fuzz runs
# FUZZ_SECONDS, default 60).  A crash, a sanitizer report or a broken
# promise of upc_msg_parse() fails it; the input that did it is kept in
# the build tree (tests/fuzz-proto-crash-*) with the command that replays
# it.  Skips where configure found no compiler that links -fsanitize=fuzzer
# (UPC_FUZZ_CC empty; UPC_FUZZ_MISSING says why; make check sets both).
. "$(dirname "$0")/sh-lib.sh"

if [ -z "${UPC_FUZZ_CC:-}" ]; then
	skip parser "libFuzzer target not built: ${UPC_FUZZ_MISSING:-configure found no clang that links -fsanitize=fuzzer}"
	finish
fi
F=$B/daemon/fuzz-proto
SEEDS=$B/daemon/fuzz-corpus.gen
if [ ! -x "$F" ] || [ ! -d "$SEEDS" ]; then
	fail parser "$F or $SEEDS is missing (make check builds them: check_DATA)"
	finish
fi
W=$(mktemp -d "${TMPDIR:-/tmp}/upc-fuzz.XXXXXX") || exit 99
trap 'rm -rf "$W"' EXIT
mkdir "$W/new"
nseeds=$(ls "$SEEDS" | wc -l)

# The seeds alone (-runs=0: each once): all are valid messages.
if ! "$F" -runs=0 "$SEEDS" >"$W/seeds.log" 2>&1; then
	fail seeds "a seed fails: $(grep -m1 -E 'broken promise|ERROR' "$W/seeds.log")"
	cat "$W/seeds.log"
elif [ "$nseeds" -lt 20 ] || ! grep -q "^INFO: seed corpus: files: $nseeds " "$W/seeds.log"; then
	fail seeds "not all $nseeds seeds of $SEEDS were read"
	cat "$W/seeds.log"
else
	pass "seeds ($nseeds)"
fi

secs=${UPC_FUZZ_SECONDS:-10}
# -timeout: one input that takes a second is a hang (the parser is a few
# comparisons); -rss_limit_mb: a leak or a runaway allocation.
if "$F" -max_total_time="$secs" -timeout=5 -rss_limit_mb=1024 -print_final_stats=1 \
	-artifact_prefix="$W/crash-" "$W/new" "$SEEDS" >"$W/fuzz.log" 2>&1; then
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$W/fuzz.log")
	if [ "${runs:-0}" -ge 1000 ]; then
		pass "parser ($runs inputs in ${secs} s from $nseeds seeds)"
	else
		fail parser "only ${runs:-0} inputs ran in ${secs} s"
		tail -20 "$W/fuzz.log"
	fi
else
	for a in "$W"/crash-*; do
		[ -e "$a" ] || continue
		cp "$a" "$B/tests/fuzz-proto-$(basename "$a")"
		echo "input kept: $B/tests/fuzz-proto-$(basename "$a") (replay: $F $B/tests/fuzz-proto-$(basename "$a"))"
	done
	fail parser "$(grep -m1 -E 'broken promise|ERROR|SUMMARY' "$W/fuzz.log")"
	tail -40 "$W/fuzz.log"
fi
finish
