-- Claims are held in the delivering process's memory: a crash releases them
-- with it, and a CLI command opening the spool cannot void them. The column
-- that held them on disk goes.
ALTER TABLE recipient DROP COLUMN lease_until;
