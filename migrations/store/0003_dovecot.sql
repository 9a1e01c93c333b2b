-- Each account's Maildir, relative to data_dir/mail, exactly as Postern writes
-- it (`domain/local-part`, the local part encoded: store/dovecot.rs). Set when
-- the account is added; rows from before this migration are filled in when
-- the store is next opened.
ALTER TABLE account ADD COLUMN maildir TEXT;

-- Dovecot's user and password database (docs/dovecot.md), for its SQLite
-- driver. Its columns are an interface other programs read: add columns, but
-- never rename or remove one.
--   user      the login name: the account's address, in lower case
--   password  the argon2 PHC string with the scheme Dovecot reads it by
--             ({ARGON2ID}, {ARGON2I}); NULL for a hash it cannot verify
--   domain    the account's domain
--   maildir   its Maildir, relative to data_dir/mail
CREATE VIEW dovecot_users AS
SELECT address AS user,
       CASE
           WHEN password_hash GLOB '$argon2id$*' THEN '{ARGON2ID}' || password_hash
           WHEN password_hash GLOB '$argon2i$*' THEN '{ARGON2I}' || password_hash
       END AS password,
       domain,
       maildir
FROM account;
