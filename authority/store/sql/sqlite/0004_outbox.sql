-- The transactional outbox and the audit log.
--
-- outbox: every security-relevant change writes its event here in the same transaction
-- as the change, so a rolled-back change leaves no event. `sequence` grows with every
-- insert (AUTOINCREMENT never reuses a number); the relay claims unpublished events in
-- that order, under a lease (claimed_until) so a relay that dies mid-batch does not hold
-- them for ever, and sets published_at once the sink has accepted them.
CREATE TABLE outbox (
    sequence       INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT    NOT NULL UNIQUE,
    type           TEXT    NOT NULL,
    aggregate_type TEXT    NOT NULL,
    aggregate_id   TEXT    NOT NULL,
    occurred_at    INTEGER NOT NULL,
    actor          TEXT    NOT NULL,
    source_address TEXT    NOT NULL,
    request_id     TEXT    NOT NULL,
    data           TEXT    NOT NULL,
    claimed_until  INTEGER,
    published_at   INTEGER
);
CREATE INDEX outbox_unpublished ON outbox (sequence) WHERE published_at IS NULL;

-- audit_log: append-only, one row per event (event_id is unique, so a redelivered event
-- is not recorded twice), ordered by the event's outbox sequence.
CREATE TABLE audit_log (
    event_sequence INTEGER NOT NULL PRIMARY KEY,
    event_id       TEXT    NOT NULL UNIQUE,
    action         TEXT    NOT NULL,
    actor          TEXT    NOT NULL,
    target_type    TEXT    NOT NULL,
    target_id      TEXT    NOT NULL,
    source_address TEXT    NOT NULL,
    request_id     TEXT    NOT NULL,
    result         TEXT    NOT NULL,
    occurred_at    INTEGER NOT NULL,
    data           TEXT    NOT NULL
);
CREATE INDEX audit_log_by_time ON audit_log (occurred_at);
CREATE INDEX audit_log_by_target ON audit_log (target_id, event_sequence);

-- Webhook subscriptions: an endpoint and the event types it wants (a JSON list; empty
-- means every type). The signing secret is stored only wrapped under the KEK.
CREATE TABLE webhooks (
    id             TEXT    NOT NULL PRIMARY KEY,
    url            TEXT    NOT NULL,
    event_types    TEXT    NOT NULL,
    wrapped_secret BLOB    NOT NULL,
    created_at     INTEGER NOT NULL
);

-- Deliveries that failed every retry, kept until replayed (or their webhook deleted).
CREATE TABLE webhook_dead_letters (
    id         TEXT    NOT NULL PRIMARY KEY,
    webhook_id TEXT    NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id   TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    attempts   INTEGER NOT NULL,
    last_error TEXT    NOT NULL,
    failed_at  INTEGER NOT NULL
);
CREATE INDEX webhook_dead_letters_by_webhook ON webhook_dead_letters (webhook_id, failed_at);
