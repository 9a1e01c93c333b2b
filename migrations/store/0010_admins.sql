-- Who may sign in to the web dashboard (`postern admin add`): a name and
-- its argon2id password hash, apart from the mail accounts.
CREATE TABLE admin (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created INTEGER NOT NULL
);
