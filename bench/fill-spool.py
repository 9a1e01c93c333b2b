# Fills a spool made by `postern` (its migrations) with N messages of 1 KiB in
# one SQLite transaction, instead of through SMTP, which would take hours:
# one message in three has a second recipient; 1,000 destination domains, the
# first ones far more common (domain999.example gets about one message in
# 3,000); a third of the recipients tried before (with a failure kind), one
# message in a hundred held. Used by queue-summary.sh and dashboard.sh.
#
#   python3 bench/fill-spool.py SPOOL.sqlite N [DUE_IN_SECONDS]
#
# Recipients fall due within DUE_IN_SECONDS + an hour (default 0: within the
# hour); a server started on the spool tries none of them before then.
import sqlite3, sys, time

db, n = sys.argv[1], int(sys.argv[2])
due = int(sys.argv[3]) if len(sys.argv) > 3 else 0
c = sqlite3.connect(db)
now = int(time.time())
c.executescript(f"""
BEGIN;
WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < {n} - 1)
INSERT INTO message (id, created, sender, size, smtputf8, body)
SELECT printf('%014d', i), {now} - 432000 + i * 432000 / {n},
       'sender' || (i % 5000) || '@example.com', 1024, 0, randomblob(1024)
FROM k;
WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < {n} - 1),
r AS (
  SELECT i, 0 AS idx, (i * i) % 1000 * ((i * i) % 1000) / 1000 AS d FROM k
  UNION ALL
  SELECT i, 1, (i * 7) % 1000 FROM k WHERE i % 3 = 0
)
INSERT INTO recipient (message_id, idx, address, next_attempt, attempts, held, domain, last_kind)
SELECT printf('%014d', i), idx, 'user' || i || '@domain' || d || '.example',
       {now} + {due} + (i % 3600), CASE WHEN i % 3 = 1 THEN 1 + i % 7 ELSE 0 END,
       i % 100 = 0, 'domain' || d || '.example',
       CASE WHEN i % 3 != 1 THEN NULL WHEN i % 5 = 0 THEN 'tls' ELSE 'unreachable:25' END
FROM r;
COMMIT;
""")
c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
c.close()
