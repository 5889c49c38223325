-- Credential changes are ordered with logins (issue 9, item 1).
--
-- credential_generation grows with every credential change of the principal (password,
-- disabled, deletion, subject revocation). A login inserts its session only while the
-- generation it checked the password under is still the stored one, in the same
-- transaction, so a change either sees (and ends) the session or makes the login fail.
-- credentials_changed_at is the instant of the last change (microseconds, like every
-- instant here; 0 for never): tokens minted after it carry a later `iat`.
ALTER TABLE principals ADD COLUMN credential_generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE principals ADD COLUMN credentials_changed_at INTEGER NOT NULL DEFAULT 0;
