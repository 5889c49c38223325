-- The token lifecycle: clients, refresh sessions, durable revocations.
-- Instants are INTEGER microseconds since the Unix epoch, UTC; durations are microseconds.

-- OAuth clients. secret_hash is SHA-256 of the secret (empty for public clients);
-- list columns hold JSON arrays of strings.
CREATE TABLE clients (
    id                   TEXT    NOT NULL PRIMARY KEY,
    secret_hash          BLOB    NOT NULL,
    grant_types          TEXT    NOT NULL,
    audiences            TEXT    NOT NULL,
    scopes               TEXT    NOT NULL,
    default_scopes       TEXT    NOT NULL,
    access_token_ttl     INTEGER NOT NULL,
    session_idle_ttl     INTEGER NOT NULL,
    session_absolute_ttl INTEGER NOT NULL,
    disabled             INTEGER NOT NULL CHECK (disabled IN (0, 1)),
    created_at           INTEGER NOT NULL
);

-- A session is one login; its refresh tokens form a chain. revoked_at is set once.
CREATE TABLE sessions (
    id                  TEXT    NOT NULL PRIMARY KEY,
    subject             TEXT    NOT NULL,
    client_id           TEXT    NOT NULL,
    audience            TEXT    NOT NULL,
    scope               TEXT    NOT NULL,
    created_at          INTEGER NOT NULL,
    idle_ttl            INTEGER NOT NULL,
    absolute_expires_at INTEGER NOT NULL,
    revoked_at          INTEGER
);
CREATE INDEX sessions_by_subject ON sessions (subject);
CREATE INDEX sessions_by_client ON sessions (client_id);
CREATE INDEX sessions_by_expiry ON sessions (absolute_expires_at);

-- Refresh tokens, by SHA-256 only. sealed_successor is the successor pair encrypted
-- under a key derived from this token (see authority.crypto.token_sealing).
CREATE TABLE refresh_tokens (
    token_hash       BLOB    NOT NULL PRIMARY KEY,
    session_id       TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    issued_at        INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    consumed_at      INTEGER,
    successor_hash   BLOB,
    sealed_successor BLOB,
    CHECK ((consumed_at IS NULL) = (successor_hash IS NULL))
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

-- Durable revocations: tokens of `kind`=`value` issued at or before issued_before are
-- rejected; the row is useless, and pruned, after expires_at.
CREATE TABLE revocations (
    kind          TEXT    NOT NULL,
    value         TEXT    NOT NULL,
    issued_before INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    PRIMARY KEY (kind, value)
);
CREATE INDEX revocations_by_expiry ON revocations (expires_at);
