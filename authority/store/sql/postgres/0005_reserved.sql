-- Reserved for another change of the same release (the lead replaces this file on merge).
SELECT 1;
