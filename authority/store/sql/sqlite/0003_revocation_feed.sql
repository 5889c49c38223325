-- When each revocation was (last) recorded, so other processes sharing the store can
-- poll for what is new (the safety net behind the pub/sub fan-out).
ALTER TABLE revocations ADD COLUMN recorded_at INTEGER NOT NULL DEFAULT 0;
CREATE INDEX revocations_by_recorded_at ON revocations (recorded_at);
