-- What DMARC aggregate reports (RFC 7489 §7.2, src/dmarc/report.rs) will
-- tell the domains that ask for them: the results of the messages that
-- claimed each domain since its last report, counted by kind.

-- A kind of result for a domain: mail-auth's report record (source address,
-- From: domain, SPF/DKIM results, disposition) as JSON, and how many
-- messages had it.
CREATE TABLE dmarc_record (
    domain TEXT NOT NULL,
    record TEXT NOT NULL,
    count  INTEGER NOT NULL,
    PRIMARY KEY (domain, record)
) WITHOUT ROWID;

-- The domain's policy as last seen (mail-auth's "policy published", JSON),
-- where its reports go (a JSON list of addresses), and since when its
-- records are counted.
CREATE TABLE dmarc_policy (
    domain TEXT PRIMARY KEY NOT NULL,
    policy TEXT NOT NULL,
    rua    TEXT NOT NULL,
    since  INTEGER NOT NULL
);
