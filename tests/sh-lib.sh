# SPDX-License-Identifier: MIT
# Shared by the shell tests tests/test_*.sh: results in Criterion's format
# ([PASS], [FAIL], [SKIP] and a Synthesis line), so that scripts/test-summary
# counts them with the Criterion programs, and the automake exit status:
# 1 if a case failed, else 77 if one was skipped, else 0 (99: none ran).
# A test sets its cases' prefix with TNAME (default: the script's name),
# calls pass/fail/skip per case and ends with finish.
#
#   UPC_TEST_BUILDDIR   the build tree (make check sets it; default: .)

set -u
: "${UPC_TEST_BUILDDIR:=$(pwd)}"
B=$UPC_TEST_BUILDDIR
: "${TNAME:=$(basename "$0" .sh)}"
npass=0 nfail=0 nskip=0

pass() { npass=$((npass + 1)); echo "[PASS] $TNAME::$1"; }
fail() { nfail=$((nfail + 1)); echo "[FAIL] $TNAME::$1: $2"; }
skip() { nskip=$((nskip + 1)); echo "[SKIP] $TNAME::$1: $2"; }

finish() {
	echo "[====] Synthesis: Tested: $((npass + nfail)) | Passing: $npass | Failing: $nfail | Crashing: 0"
	[ "$nfail" -gt 0 ] && exit 1
	[ "$nskip" -gt 0 ] && exit 77
	[ "$npass" -gt 0 ] || exit 99
	exit 0
}
