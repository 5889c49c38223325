-- Canonical principal names and the claims a client may set in token exchange.
--
-- canonical_name is the identity of a name (NFKC_Casefold): unique, and what every lookup
-- uses. name_skeleton (UTS #39, accents removed) is what the name looks like: unique, so
-- a look-alike of an existing name cannot be created; NULL only for an existing row whose
-- skeleton equals an older row's (both kept, see the runbook). Both are derived from
-- `name` by authority.domain.principals and filled in for existing rows right after this
-- script, in the same transaction (authority.store.migrations.backfill_principal_names);
-- two existing rows with one canonical name make the migration fail, naming them.
ALTER TABLE principals ADD COLUMN canonical_name TEXT;
ALTER TABLE principals ADD COLUMN name_skeleton TEXT;
CREATE UNIQUE INDEX principals_canonical_name_key ON principals (canonical_name);
CREATE UNIQUE INDEX principals_name_skeleton_key ON principals (name_skeleton);

-- JSON arrays of claim names a client may set in token exchange; the second holds the
-- security-sensitive ones, registered on purpose (authority.domain.claims).
ALTER TABLE clients ADD COLUMN allowed_claims TEXT NOT NULL DEFAULT '[]';
ALTER TABLE clients ADD COLUMN allowed_sensitive_claims TEXT NOT NULL DEFAULT '[]';
