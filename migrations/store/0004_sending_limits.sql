-- Per-user overrides of [limits] messages_per_hour_per_user and
-- recipients_per_day_per_user (`postern user limits`); NULL: the default.
ALTER TABLE account ADD COLUMN messages_per_hour INTEGER;
ALTER TABLE account ADD COLUMN recipients_per_day INTEGER;
