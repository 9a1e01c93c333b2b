-- RFC 8689: the sender asked (MAIL FROM ... REQUIRETLS) that every hop of
-- the message use TLS with a verified certificate and offer REQUIRETLS.
ALTER TABLE message ADD COLUMN requiretls BOOLEAN NOT NULL DEFAULT FALSE;
