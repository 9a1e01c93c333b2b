-- Large bodies live in append-only segment files (src/spool/segments.rs): the
-- row then says where, and its body column is empty.
ALTER TABLE message ADD COLUMN segment INTEGER;
ALTER TABLE message ADD COLUMN segment_offset INTEGER;
CREATE INDEX message_segment ON message (segment) WHERE segment IS NOT NULL;
