-- The dashboard's stuck mail: deferred recipients (queued, not held, tried
-- before) grouped by domain and the kind of their last failure. Without it
-- the grouping read every deferred recipient's row (0.8 s with 1,000,000
-- messages queued, a third of them deferred); with it, the index alone
-- (50 ms). Partial, so that fresh mail, delivered at its first attempt,
-- never writes to it: only a recipient that is deferred enters it.
CREATE INDEX recipient_stuck ON recipient (domain, last_kind)
    WHERE status = 'queued' AND held = FALSE AND attempts > 0;
