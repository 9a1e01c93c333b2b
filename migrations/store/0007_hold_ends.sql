-- When an account's hold last ended (`postern user release`, a new
-- password), Unix seconds: what it sent before is not counted again as a
-- burst against what it sends after.
ALTER TABLE account ADD COLUMN hold_ended INTEGER;
-- When its password last changed: a session that logged in before may not
-- send (the thief's open connection ends with the old password).
ALTER TABLE account ADD COLUMN password_changed INTEGER;
