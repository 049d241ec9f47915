# SPDX-License-Identifier: MIT
# Shared by the real-client tests (tests/clients/test_*.sh, issue 9).
#
# Each test runs a real program on the kernel ("kernel") and under the
# preload shim in both tracking modes ("shim-sync", "shim-async"), checks
# each run on its own and compares the shim runs with the kernel's.
# Results are printed in Criterion's format ([PASS], [FAIL], [SKIP] and a
# Synthesis line), so that scripts/test-summary counts them with the rest.
#
# Environment:
#   UPC_TEST_BUILDDIR   the build tree (make check sets it);
#   UPCACHE_RUN         the shim's launcher (default: the build tree's
#                       preload/upcache-run); "none": kernel runs only;
#   UPC_CLIENT_MODES    the runs (default: "kernel shim-sync shim-async");
#   UPC_CLIENTS_LONG=1  the long versions (make check-clients);
#   UPC_CLIENT_KEEP=1   keep the work directory (its path is printed).
# Exit status: 1 if a check failed; else 77 if a part was skipped (the
# shim is not built: nothing was compared); else 0.

set -u
: "${UPC_TEST_BUILDDIR:=$(pwd)}"
B=$UPC_TEST_BUILDDIR
: "${UPCACHE_RUN:=$B/preload/upcache-run}"
: "${UPC_CLIENT_MODES:=kernel shim-sync shim-async}"
: "${UPC_CLIENTS_LONG:=0}"
: "${UPC_CLIENT_TIMEOUT:=300}"
TNAME=$(basename "$0" .sh)
npass=0 nfail=0 nskip=0

W=$(mktemp -d "${TMPDIR:-/var/tmp}/upc-$TNAME.XXXXXX") || exit 99
cleanup() {
	if [ "${UPC_CLIENT_KEEP:-0}" = 1 ] || [ "$nfail" -gt 0 ]; then
		echo "work directory kept: $W"
	else
		rm -rf "$W"
	fi
}
trap cleanup EXIT

pass() { npass=$((npass + 1)); echo "[PASS] $TNAME::$1"; }
fail() {
	nfail=$((nfail + 1))
	echo "[FAIL] $TNAME::$1: $2"
}
skip() { nskip=$((nskip + 1)); echo "[SKIP] $TNAME::$1: $2"; }

# check NAME CMD...: CMD's exit status decides.
check() {
	name=$1
	shift
	if "$@"; then pass "$name"; else fail "$name" "$*"; fi
}

# The modes that can run here; shim modes without a shim are skipped once.
modes() {
	for m in $UPC_CLIENT_MODES; do
		case $m in
		kernel) echo kernel ;;
		shim-*)
			if [ "$UPCACHE_RUN" != none ] && [ -x "$UPCACHE_RUN" ]; then
				echo "$m"
			fi ;;
		esac
	done
}
shim_check() {
	case " $UPC_CLIENT_MODES " in *" shim-"*) ;; *) return ;; esac
	if [ "$UPCACHE_RUN" = none ]; then
		skip shim "UPCACHE_RUN=none: runs on the kernel only, nothing compared"
	elif [ ! -x "$UPCACHE_RUN" ]; then
		skip shim "the shim is not built ($UPCACHE_RUN): runs on the kernel only, nothing compared"
	fi
}

# run MODE LOG CMD...: run CMD on the kernel or under the shim, output to LOG.
run() {
	mode=$1 log=$2
	shift 2
	case $mode in
	kernel) timeout -k 10 "$UPC_CLIENT_TIMEOUT" "$@" >"$log" 2>&1 ;;
	shim-sync | shim-async)
		UPCACHE_RUN_LOG=$log.shim timeout -k 10 "$UPC_CLIENT_TIMEOUT" \
			"$UPCACHE_RUN" --tracking="${mode#shim-}" "$@" >"$log" 2>&1 ;;
	*) echo "unknown mode $mode" >"$log"; return 99 ;;
	esac
}

# show FILE: the tail of a log, for a failure.
show() {
	echo "---- $1 (last 20 lines)"
	tail -n 20 "$1" 2>/dev/null
	[ -s "$1.shim" ] && { echo "---- $1.shim (last 10 lines)"; tail -n 10 "$1.shim"; }
	echo "----"
}

# same NAME KERNELFILE OTHERFILE: byte-identical, or a failure with the diff's head.
same() {
	if cmp -s "$2" "$3"; then
		pass "$1"
	else
		fail "$1" "$3 differs from $2"
		diff "$2" "$3" | head -n 20
	fi
}

finish() {
	total=$((npass + nfail))
	echo "[====] Synthesis: Tested: $total | Passing: $npass | Failing: $nfail | Crashing: 0"
	[ "$nfail" -gt 0 ] && exit 1
	[ "$nskip" -gt 0 ] && exit 77
	[ "$npass" -gt 0 ] || exit 99
	exit 0
}

shim_check
