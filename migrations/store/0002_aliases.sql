-- Aliases: mail for source goes to each target instead. A source of the form
-- "@domain" is the domain's catch-all.
CREATE TABLE alias (
    source  TEXT NOT NULL,
    domain  TEXT NOT NULL REFERENCES domain(name) ON DELETE CASCADE,
    target  TEXT NOT NULL,
    created INTEGER NOT NULL,
    PRIMARY KEY (source, target)
);
