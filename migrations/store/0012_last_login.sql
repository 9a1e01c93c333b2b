-- When (Unix seconds) and on which port each account last logged in, for
-- the dashboard's accounts view. Written a few seconds after the login, with
-- the port map (src/portmap), so a login costs no sync of its own.
ALTER TABLE account ADD COLUMN last_login INTEGER;
ALTER TABLE account ADD COLUMN last_login_port INTEGER;
