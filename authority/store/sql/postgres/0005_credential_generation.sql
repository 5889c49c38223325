-- Credential changes are ordered with logins (issue 9, item 1).
--
-- credential_generation grows with every credential change of the principal (password,
-- disabled, deletion, subject revocation). A login inserts its session only while the
-- generation it checked the password under is still the stored one, holding a share lock
-- on the principal's row in the same transaction, so a change either sees (and ends) the
-- session or makes the login fail. credentials_changed_at is the instant of the last
-- change (NULL for never): tokens minted after it carry a later `iat`.
ALTER TABLE principals ADD COLUMN credential_generation bigint NOT NULL DEFAULT 0;
ALTER TABLE principals ADD COLUMN credentials_changed_at timestamptz;
