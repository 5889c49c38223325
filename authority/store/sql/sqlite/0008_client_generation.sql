-- Client changes are ordered with the calls that mint tokens for the client.
--
-- generation grows with every change of the client (disable, enable, secret rotation,
-- claim policy). A write that commits a token minted for the client (the token.issued
-- event of client credentials, the session of a token exchange or a login through it)
-- commits only while the client is enabled and still at the generation read when the
-- caller was authenticated, in the same transaction (the write lock orders it with every
-- change). issued_until is the highest `iat` of a client-credentials token committed
-- under that check, changed_at the client's last revocation instant (microseconds, like
-- every instant here; 0 for none): tokens minted after it carry a later `iat`.
ALTER TABLE clients ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE clients ADD COLUMN issued_until INTEGER NOT NULL DEFAULT 0;
ALTER TABLE clients ADD COLUMN changed_at INTEGER NOT NULL DEFAULT 0;
