#!/bin/sh
# SPDX-License-Identifier: MIT
# sqlite-work.sh JOURNAL ROWS BASE: print a deterministic, write-heavy SQLite
# script (tests/clients/test_sqlite.sh): inserts, updates, deletes in
# batches of transactions, an index build, VACUUM, and checks.  JOURNAL is
# wal or delete.  No random(): two runs must leave identical databases.
set -eu
journal=$1 rows=$2 base=$3
cat <<SQL
PRAGMA mmap_size=1073741824;
PRAGMA journal_mode=$journal;
PRAGMA cache_size=-256;
CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, a INTEGER, b TEXT, c BLOB);
CREATE TABLE IF NOT EXISTS log(n INTEGER PRIMARY KEY, what TEXT);
SQL
i=0
while [ $i -lt 8 ]; do
	lo=$((base + i * rows / 8 + 1)) hi=$((base + (i + 1) * rows / 8))
	cat <<SQL
BEGIN;
WITH RECURSIVE n(i) AS (SELECT $lo UNION ALL SELECT i + 1 FROM n WHERE i < $hi)
INSERT INTO t SELECT i, (i * 7919) % 1009, printf('row %d %s', i, substr(hex(i * 2654435761), 1, 1 + i % 12)),
	zeroblob(0) || cast(printf('%.*c', 20 + (i * 31) % 900, char(65 + i % 26)) AS BLOB) FROM n;
UPDATE t SET a = a + $i, b = b || ' u$i' WHERE id % 7 = $i % 7;
DELETE FROM t WHERE id % 11 = $i AND id < $hi;
INSERT INTO log(what) VALUES ('batch $i');
COMMIT;
SQL
	i=$((i + 1))
done
cat <<SQL
CREATE INDEX IF NOT EXISTS t_a ON t(a, b);
BEGIN;
UPDATE t SET c = cast(printf('%.*c', 3000 + id % 1000, 'z') AS BLOB) WHERE id % 13 = 0;
DELETE FROM t WHERE a % 5 = 0;
INSERT INTO log(what) VALUES ('big update');
COMMIT;
VACUUM;
UPDATE t SET b = upper(b) WHERE id % 17 = 0;
PRAGMA integrity_check;
PRAGMA mmap_size;
SELECT 'rows', count(*), sum(a), total(length(b)), total(length(c)) FROM t;
SQL
