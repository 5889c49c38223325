-- The transactional outbox and the audit log.
--
-- outbox: every security-relevant change writes its event here in the same transaction
-- as the change, so a rolled-back change leaves no event. `sequence` grows with every
-- insert; the relay claims unpublished events in that order (FOR UPDATE SKIP LOCKED, so
-- relays on several replicas never claim the same rows at once) under a lease
-- (claimed_until) so a relay that dies mid-batch does not hold them for ever, and sets
-- published_at once the sink has accepted them.
CREATE TABLE outbox (
    sequence       bigint      GENERATED ALWAYS AS IDENTITY,
    id             text        NOT NULL,
    type           text        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    actor          text        NOT NULL,
    source_address text        NOT NULL,
    request_id     text        NOT NULL,
    data           jsonb       NOT NULL,
    claimed_until  timestamptz,
    published_at   timestamptz,
    CONSTRAINT outbox_pkey PRIMARY KEY (sequence),
    CONSTRAINT outbox_id_key UNIQUE (id)
);
CREATE INDEX outbox_unpublished ON outbox (sequence) WHERE published_at IS NULL;

-- audit_log: append-only, one row per event (event_id is unique, so a redelivered event
-- is not recorded twice), ordered by the event's outbox sequence.
CREATE TABLE audit_log (
    event_sequence bigint      NOT NULL,
    event_id       text        NOT NULL,
    action         text        NOT NULL,
    actor          text        NOT NULL,
    target_type    text        NOT NULL,
    target_id      text        NOT NULL,
    source_address text        NOT NULL,
    request_id     text        NOT NULL,
    result         text        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    data           jsonb       NOT NULL,
    CONSTRAINT audit_log_pkey PRIMARY KEY (event_sequence),
    CONSTRAINT audit_log_event_id_key UNIQUE (event_id)
);
CREATE INDEX audit_log_by_time ON audit_log (occurred_at);
CREATE INDEX audit_log_by_target ON audit_log (target_id, event_sequence);

-- Webhook subscriptions: an endpoint and the event types it wants (empty means every
-- type). The signing secret is stored only wrapped under the KEK.
CREATE TABLE webhooks (
    id             text        NOT NULL,
    url            text        NOT NULL,
    event_types    text[]      NOT NULL,
    wrapped_secret bytea       NOT NULL,
    created_at     timestamptz NOT NULL,
    CONSTRAINT webhooks_pkey PRIMARY KEY (id)
);

-- Deliveries that failed every retry, kept until replayed (or their webhook deleted).
CREATE TABLE webhook_dead_letters (
    id         text        NOT NULL,
    webhook_id text        NOT NULL,
    event_id   text        NOT NULL,
    payload    bytea       NOT NULL,
    attempts   integer     NOT NULL,
    last_error text        NOT NULL,
    failed_at  timestamptz NOT NULL,
    CONSTRAINT webhook_dead_letters_pkey PRIMARY KEY (id),
    CONSTRAINT webhook_dead_letters_webhook_fkey FOREIGN KEY (webhook_id)
        REFERENCES webhooks (id) ON DELETE CASCADE
);
CREATE INDEX webhook_dead_letters_by_webhook ON webhook_dead_letters (webhook_id, failed_at);
