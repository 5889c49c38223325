-- The initial schema. Instants are timestamptz (exact microseconds, read back as UTC).
-- Tables are created in the store's schema: the connection's search_path names only it.

-- Signing keys. The private key is stored only wrapped (encrypted under kek_id)
-- and is erased (NULL) once the key is compromised.
CREATE TABLE signing_keys (
    kid                 text        NOT NULL,
    algorithm           text        NOT NULL,
    public_jwk          jsonb       NOT NULL,
    wrapped_private_key bytea,
    kek_id              text        NOT NULL,
    published_at        timestamptz NOT NULL,
    activates_at        timestamptz NOT NULL,
    retires_at          timestamptz,
    compromised_at      timestamptz,
    CONSTRAINT signing_keys_pkey PRIMARY KEY (kid),
    CONSTRAINT signing_keys_compromised_has_no_private_key
        CHECK (compromised_at IS NULL OR wrapped_private_key IS NULL)
);

-- One row whose generation grows with every committed key-ring transaction,
-- so replicas can poll cheaply for changes.
CREATE TABLE key_ring_state (
    id         integer NOT NULL,
    generation bigint  NOT NULL,
    CONSTRAINT key_ring_state_pkey PRIMARY KEY (id),
    CONSTRAINT key_ring_state_single_row CHECK (id = 1)
);

INSERT INTO key_ring_state (id, generation) VALUES (1, 0);

-- Principals: the parties tokens are issued to. password_hash is an argon2id PHC string.
CREATE TABLE principals (
    id            text        NOT NULL,
    name          text        NOT NULL,
    password_hash text        NOT NULL,
    disabled      boolean     NOT NULL,
    created_at    timestamptz NOT NULL,
    CONSTRAINT principals_pkey PRIMARY KEY (id),
    CONSTRAINT principals_name_key UNIQUE (name)
);
