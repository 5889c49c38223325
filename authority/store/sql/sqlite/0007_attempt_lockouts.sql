-- Lockouts of a (principal, source) pair, durable so that they stay in force while Redis
-- (which holds the live limits) is down or after it restarted empty, on every replica.
-- `key` is the pair key (the principal name and the source's limit key); a row is
-- written when a failure imposes a lock and pruned once the lock has ended.
-- locked_until is in microseconds since the epoch, like every time in this schema.
CREATE TABLE attempt_lockouts (
    key          TEXT    PRIMARY KEY,
    locked_until INTEGER NOT NULL
);
CREATE INDEX attempt_lockouts_by_end ON attempt_lockouts (locked_until);
