-- What kind of failure a recipient's last attempt met (`unreachable:25`,
-- `reply@rcpt`, `tls`, ...; see src/failure.rs), so that `postern queue show`
-- and the DSN explain it by kind rather than by the words of `last_reply`.
-- NULL when the last attempt did not fail, or before this column existed.
ALTER TABLE recipient ADD COLUMN last_kind TEXT;
