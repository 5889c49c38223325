-- The token lifecycle: clients, refresh sessions, durable revocations.
-- Instants are timestamptz; durations are intervals (exact microseconds).

-- OAuth clients. secret_hash is SHA-256 of the secret (empty for public clients).
CREATE TABLE clients (
    id                   text        NOT NULL,
    secret_hash          bytea       NOT NULL,
    grant_types          text[]      NOT NULL,
    audiences            text[]      NOT NULL,
    scopes               text[]      NOT NULL,
    default_scopes       text[]      NOT NULL,
    access_token_ttl     interval    NOT NULL,
    session_idle_ttl     interval    NOT NULL,
    session_absolute_ttl interval    NOT NULL,
    disabled             boolean     NOT NULL,
    created_at           timestamptz NOT NULL,
    CONSTRAINT clients_pkey PRIMARY KEY (id)
);

-- A session is one login; its refresh tokens form a chain. revoked_at is set once.
CREATE TABLE sessions (
    id                  text        NOT NULL,
    subject             text        NOT NULL,
    client_id           text        NOT NULL,
    audience            text[]      NOT NULL,
    scope               text[]      NOT NULL,
    created_at          timestamptz NOT NULL,
    idle_ttl            interval    NOT NULL,
    absolute_expires_at timestamptz NOT NULL,
    revoked_at          timestamptz,
    CONSTRAINT sessions_pkey PRIMARY KEY (id)
);
CREATE INDEX sessions_by_subject ON sessions (subject);
CREATE INDEX sessions_by_client ON sessions (client_id);
CREATE INDEX sessions_by_expiry ON sessions (absolute_expires_at);

-- Refresh tokens, by SHA-256 only. sealed_successor is the successor pair encrypted
-- under a key derived from this token (see authority.crypto.token_sealing).
CREATE TABLE refresh_tokens (
    token_hash       bytea       NOT NULL,
    session_id       text        NOT NULL,
    issued_at        timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    consumed_at      timestamptz,
    successor_hash   bytea,
    sealed_successor bytea,
    CONSTRAINT refresh_tokens_pkey PRIMARY KEY (token_hash),
    CONSTRAINT refresh_tokens_session_fkey FOREIGN KEY (session_id)
        REFERENCES sessions (id) ON DELETE CASCADE,
    CONSTRAINT refresh_tokens_consumed_has_successor
        CHECK ((consumed_at IS NULL) = (successor_hash IS NULL))
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);
-- What prune wipes: sealed successors of consumed tokens, oldest first.
CREATE INDEX refresh_tokens_sealed_by_consumed_at ON refresh_tokens (consumed_at)
    WHERE sealed_successor IS NOT NULL;

-- Durable revocations: tokens of `kind`=`value` issued at or before issued_before are
-- rejected; the row is useless, and pruned, after expires_at.
CREATE TABLE revocations (
    kind          text        NOT NULL,
    value         text        NOT NULL,
    issued_before timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    CONSTRAINT revocations_pkey PRIMARY KEY (kind, value)
);
CREATE INDEX revocations_by_expiry ON revocations (expires_at);
