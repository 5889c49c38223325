-- Placeholder on the h4 branch only: this version number belongs to another branch's
-- migration. Delete this file when merging (the real 0005-0007 take its place).
SELECT 1;
