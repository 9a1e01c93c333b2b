-- RFC 8689 §4.1: the message says "TLS-Required: No": the recipient
-- domains' TLS policies (MTA-STS, DANE) are not applied to it.
ALTER TABLE message ADD COLUMN tls_policy_waived BOOLEAN NOT NULL DEFAULT FALSE;
