-- Client changes are ordered with the calls that mint tokens for the client.
--
-- generation grows with every change of the client (disable, enable, secret rotation,
-- claim policy). A write that commits a token minted for the client (the token.issued
-- event of client credentials, the session of a token exchange or a login through it)
-- commits only while the client is enabled and still at the generation read when the
-- caller was authenticated, under a lock on this row in the same transaction; a change
-- takes the row lock first, so it either waits for that write (and then revokes its
-- token) or the write finds the new generation and fails.
-- issued_until is the highest `iat` of a client-credentials token committed under that
-- check (NULL for none): a client revocation covers at least up to it, whatever the clock
-- of the replica that minted it. changed_at is the client's last revocation instant (NULL
-- for never): tokens minted after it carry a later `iat`.
ALTER TABLE clients ADD COLUMN generation bigint NOT NULL DEFAULT 0;
ALTER TABLE clients ADD COLUMN issued_until timestamptz;
ALTER TABLE clients ADD COLUMN changed_at timestamptz;
