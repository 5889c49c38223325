-- The initial schema. Instants are INTEGER microseconds since the Unix epoch, UTC.

-- Signing keys. The private key is stored only wrapped (encrypted under kek_id)
-- and is erased (NULL) once the key is compromised.
CREATE TABLE signing_keys (
    kid                 TEXT    NOT NULL PRIMARY KEY,
    algorithm           TEXT    NOT NULL,
    public_jwk          TEXT    NOT NULL,  -- a JSON object
    wrapped_private_key BLOB,
    kek_id              TEXT    NOT NULL,
    published_at        INTEGER NOT NULL,
    activates_at        INTEGER NOT NULL,
    retires_at          INTEGER,
    compromised_at      INTEGER,
    CHECK (compromised_at IS NULL OR wrapped_private_key IS NULL)
);

-- One row whose generation grows with every committed key-ring transaction,
-- so replicas can poll cheaply for changes.
CREATE TABLE key_ring_state (
    id         INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
);

INSERT INTO key_ring_state (id, generation) VALUES (1, 0);

-- Principals: the parties tokens are issued to. password_hash is an argon2id PHC string.
CREATE TABLE principals (
    id            TEXT    NOT NULL PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    disabled      INTEGER NOT NULL CHECK (disabled IN (0, 1)),
    created_at    INTEGER NOT NULL
);
