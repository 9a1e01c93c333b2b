-- Recipient domains' MTA-STS policies (RFC 8461 §5.1), kept across
-- restarts: a policy learned once holds for its max_age, so an attacker who
-- blocks the policy host after a restart cannot turn enforcement off.
-- `policy` is its text as fetched (normalised); rows past `expires` are
-- deleted when the server starts.
CREATE TABLE mta_sts_policy (
    domain TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    policy TEXT NOT NULL,
    fetched INTEGER NOT NULL,
    expires INTEGER NOT NULL
);
CREATE INDEX mta_sts_policy_expires ON mta_sts_policy (expires);
