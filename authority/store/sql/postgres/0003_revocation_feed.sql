-- When each revocation was (last) recorded, so other processes sharing the store can
-- poll for what is new (the safety net behind the pub/sub fan-out).
ALTER TABLE revocations ADD COLUMN recorded_at timestamptz NOT NULL DEFAULT 'epoch';
ALTER TABLE revocations ALTER COLUMN recorded_at DROP DEFAULT;
CREATE INDEX revocations_by_recorded_at ON revocations (recorded_at);
