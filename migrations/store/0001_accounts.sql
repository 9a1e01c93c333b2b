CREATE TABLE domain (
    name    TEXT PRIMARY KEY NOT NULL,
    created INTEGER NOT NULL
);

CREATE TABLE account (
    address       TEXT PRIMARY KEY NOT NULL,
    domain        TEXT NOT NULL REFERENCES domain(name) ON DELETE CASCADE,
    password_hash TEXT NOT NULL,
    created       INTEGER NOT NULL
);
