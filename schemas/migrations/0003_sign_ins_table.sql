-- Sign-in times get a table of their own, out of entra_user_enrichment.
--
-- The sign-in listing is the longest chain of a full resync: pages of at most 120 users, one after another
-- (834 requests per 100,000 users). Joined with MFA and devices, its values could only be written after it
-- ended, in one pass over every user (0.7-0.85 s per 100,000 users, measured, with nothing else left to
-- overlap it). In a narrow table keyed like the mirror, a tenant's first listing is COPied straight in as its
-- pages arrive, and MFA and devices are written as soon as their own, shorter listings end.
-- A user with no row never signed in (or the listing was never readable).

CREATE TABLE entra_user_sign_ins (
    tenant_id        text NOT NULL,
    id               text NOT NULL,          -- Entra object id, as in entra_users
    last_sign_in_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

INSERT INTO entra_user_sign_ins (tenant_id, id, last_sign_in_at)
SELECT tenant_id, id, last_sign_in_at FROM entra_user_enrichment WHERE last_sign_in_at IS NOT NULL;

ALTER TABLE entra_user_enrichment DROP COLUMN last_sign_in_at;

DELETE FROM entra_user_enrichment WHERE mfa IS NULL AND cardinality(device_macs) = 0;
