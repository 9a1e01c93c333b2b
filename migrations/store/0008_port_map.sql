-- Which submission ports work from which client networks (/24 for IPv4,
-- /48 for IPv6): per network and port, how many sessions connected and how
-- many authenticated, and the last day (Unix days) each happened. Autoconfig
-- lists the ports that worked from the asking network first. Rows not
-- touched for 30 days are deleted; the server keeps at most a bounded number
-- of networks (src/portmap).
CREATE TABLE port_map (
    network TEXT NOT NULL,
    port INTEGER NOT NULL,
    connected INTEGER NOT NULL DEFAULT 0,
    authenticated INTEGER NOT NULL DEFAULT 0,
    last_connected INTEGER NOT NULL DEFAULT 0,
    last_authenticated INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (network, port)
);
CREATE INDEX port_map_age ON port_map (last_connected);
