#!/bin/sh
# SPDX-License-Identifier: MIT
# The systemd units of upcd (daemon/upcd.socket, daemon/upcd.service made
# from daemon/upcd.service.in): the service's ExecStart is the installed
# daemon (@sbindir@ replaced by make: UPC_TEST_SBINDIR, which make check
# sets), and both units pass systemd-analyze verify without a word, with
# ExecStart pointed at this build's daemon (verify checks that it is
# executable).  Skips where systemd-analyze is missing.  Starting upcd the
# systemd way is tests/test_upcd.c's, with no systemd.
. "$(dirname "$0")/sh-lib.sh"
SRC=$(cd "$(dirname "$0")/.." && pwd)

W=$(mktemp -d "${TMPDIR:-/tmp}/upc-units.XXXXXX") || exit 99
trap 'rm -rf "$W"' EXIT

svc=$B/daemon/upcd.service
if [ ! -f "$svc" ]; then
	fail generated "$svc is not built"
elif grep -n '@[a-z_]*@' "$svc"; then
	fail generated "$svc: a @variable@ left"
elif [ -n "${UPC_TEST_SBINDIR:-}" ] &&
	! grep -qxF "ExecStart=$UPC_TEST_SBINDIR/upcd --foreground --keeper-socket /run/upcd/keeper.sock --fd-store" "$svc"; then
	fail generated "$svc: no ExecStart=$UPC_TEST_SBINDIR/upcd --foreground --keeper-socket /run/upcd/keeper.sock --fd-store"
else
	# the keeper (upcd(8)) outlives a crash of the main process, its socket in the runtime directory;
	# systemd's store (--fd-store) outlives them both
	grep -q '^Type=notify$' "$svc" && grep -q '^KillSignal=SIGTERM$' "$svc" &&
		grep -q '^FileDescriptorStoreMax=[1-9][0-9]*$' "$svc" &&
		grep -q '^KillMode=process$' "$svc" && grep -q '^RuntimeDirectory=upcd$' "$svc" &&
		grep -q '^RuntimeDirectoryPreserve=yes$' "$svc" &&
		grep -q '^ListenSequentialPacket=/run/upcd.sock$' "$SRC/daemon/upcd.socket" &&
		pass generated ||
		fail generated "Type=notify, KillSignal=SIGTERM, FileDescriptorStoreMax=, KillMode=process, RuntimeDirectory=upcd (preserved) or ListenSequentialPacket= missing"
fi

if ! command -v systemd-analyze >/dev/null 2>&1; then
	skip verify "systemd-analyze is not installed (Debian: systemd)"
	finish
fi
cp "$SRC/daemon/upcd.socket" "$W/upcd.socket"
sed "s|^ExecStart=[^ ]*|ExecStart=$B/daemon/upcd|" "$svc" >"$W/upcd.service"
# verify warns (unknown keys, bad values) and still exits 0: any output fails.
# --man=no: upcd(8) is not installed here.
if systemd-analyze verify --man=no "$W/upcd.socket" "$W/upcd.service" >"$W/verify.log" 2>&1 &&
	[ ! -s "$W/verify.log" ]; then
	pass verify
else
	fail verify "systemd-analyze verify:"
	sed 's/^/  /' "$W/verify.log"
fi
finish
