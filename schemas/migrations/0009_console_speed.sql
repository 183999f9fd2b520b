-- The operator console at 100,000 End Users (issue 13): search, the sync-state filter, the set-up dialog's
-- counts, and the tenant page's notifications per hour.
--
-- 1. Search matches a prefix of the full name ("first last"), the last name or the email, lower-cased:
--    three btree indexes with text_pattern_ops serve `LIKE 'prefix%'` whatever the database's collation
--    (no pg_trgm: the embedded PostgreSQL ships without it).
CREATE INDEX end_users_org_full_name_prefix ON end_users
    (organization_id, lower(coalesce(first_name, '') || ' ' || coalesce(last_name, '')) text_pattern_ops);
CREATE INDEX end_users_org_last_name_prefix ON end_users
    (organization_id, lower(last_name) text_pattern_ops);
CREATE INDEX end_users_org_email_prefix ON end_users
    (organization_id, lower(email) text_pattern_ops);
-- 2. The sync-state filter walks the same keyset as the unfiltered list (last, first, id) within one state.
CREATE INDEX end_users_org_state_name ON end_users
    (organization_id, sync_state, lower(coalesce(last_name, '')), lower(coalesce(first_name, '')), id);

-- 3. The set-up dialog's value counts, kept as the mirror is written: one row per (tenant, section, value
--    lower-cased) with how many present users (removed IS NULL) carry it, plus ('total', '') = every present
--    user. Maintained by statement-level triggers with transition tables in the same transaction as the
--    mirror write, so a dialog reads a few hundred rows instead of counting 100,000 users. `value` is the
--    first-sorting spelling added of the value (the options showed min(value) of the spellings present).
--    The expressions are worker/core/filters.py's domains, as worker/store/admin.py's from-scratch SQL.
CREATE TABLE mirror_facets (
    tenant_id  text NOT NULL,
    section    text NOT NULL,
    key        text NOT NULL,
    value      text,
    count      bigint NOT NULL,
    PRIMARY KEY (tenant_id, section, key)
);

CREATE FUNCTION mirror_facet_pairs(user_type text, office_location text, department text, mail text,
                                   user_principal_name text)
RETURNS TABLE (section text, key text, value text) LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    WITH d AS (
        SELECT btrim(user_type) AS user_type, btrim(office_location) AS office_location,
               btrim(department) AS department,
               CASE WHEN position('@' in mail) > 0
                    THEN lower(btrim(reverse(split_part(reverse(mail), '@', 1)))) END AS mail_domain,
               CASE WHEN position('#ext#' in lower(btrim(user_principal_name))) > 0 THEN
                        CASE WHEN position('_' in split_part(lower(btrim(user_principal_name)), '#ext#', 1)) > 0
                             THEN reverse(split_part(reverse(split_part(lower(btrim(user_principal_name)),
                                                                        '#ext#', 1)), '_', 1))
                             ELSE '' END
                    WHEN position('@' in lower(btrim(user_principal_name))) > 0
                    THEN btrim(reverse(split_part(reverse(lower(btrim(user_principal_name))), '@', 1))) END
                   AS upn_domain
    )
    SELECT v.section, v.k, v.value FROM d CROSS JOIN LATERAL (VALUES
        ('total', '', ''),
        ('user_types', lower(d.user_type), d.user_type),
        ('office_locations', lower(d.office_location), d.office_location),
        ('departments', lower(d.department), d.department),
        ('domains', d.mail_domain, d.mail_domain),
        ('domains', CASE WHEN d.upn_domain IS DISTINCT FROM d.mail_domain THEN d.upn_domain END, d.upn_domain)
    ) AS v(section, k, value)
    WHERE v.k IS NOT NULL AND (v.k <> '' OR v.section = 'total')
$$;

-- Group counts are transitive (nested groups), so they are not kept row by row: a change to memberships,
-- groups, or to which users are present bumps the tenant's `version`; the options recompute the group counts
-- once per version and keep them in mirror_group_counts (`counted_version` says which version they are).
CREATE TABLE mirror_group_count_state (
    tenant_id        text PRIMARY KEY,
    version          bigint NOT NULL DEFAULT 1,
    counted_version  bigint NOT NULL DEFAULT 0
);
CREATE TABLE mirror_group_counts (
    tenant_id  text NOT NULL,
    group_id   text NOT NULL,
    count      bigint NOT NULL,
    PRIMARY KEY (tenant_id, group_id)
);

CREATE FUNCTION mirror_groups_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO mirror_group_count_state AS s (tenant_id)
        SELECT DISTINCT tenant_id FROM old_rows ORDER BY 1
        ON CONFLICT (tenant_id) DO UPDATE SET version = s.version + 1;
    ELSE
        INSERT INTO mirror_group_count_state AS s (tenant_id)
        SELECT DISTINCT tenant_id FROM new_rows ORDER BY 1
        ON CONFLICT (tenant_id) DO UPDATE SET version = s.version + 1;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER entra_groups_counts_ins AFTER INSERT ON entra_groups REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mirror_groups_changed();
CREATE TRIGGER entra_groups_counts_upd AFTER UPDATE ON entra_groups REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mirror_groups_changed();
CREATE TRIGGER entra_groups_counts_del AFTER DELETE ON entra_groups REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mirror_groups_changed();
CREATE TRIGGER entra_group_members_counts_ins AFTER INSERT ON entra_group_members
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION mirror_groups_changed();
CREATE TRIGGER entra_group_members_counts_upd AFTER UPDATE ON entra_group_members
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION mirror_groups_changed();
CREATE TRIGGER entra_group_members_counts_del AFTER DELETE ON entra_group_members
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION mirror_groups_changed();

-- The users' side: value counts by the rows a statement added (+1) and removed (-1); a user that became
-- present or absent and belongs to a group bumps the group counts' version.
CREATE FUNCTION mirror_facets_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO mirror_facets AS f (tenant_id, section, key, value, count)
        SELECT u.tenant_id, p.section, p.key, min(p.value), count(*)
        FROM new_rows u CROSS JOIN LATERAL mirror_facet_pairs(u.user_type, u.office_location, u.department,
                                                              u.mail, u.user_principal_name) p
        WHERE u.removed IS NULL
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (tenant_id, section, key) DO UPDATE
            SET count = f.count + excluded.count, value = least(f.value, excluded.value);
        INSERT INTO mirror_group_count_state AS s (tenant_id)
        SELECT DISTINCT u.tenant_id FROM new_rows u WHERE u.removed IS NULL AND EXISTS (
            SELECT 1 FROM entra_group_members m WHERE m.tenant_id = u.tenant_id AND m.member_id = u.id)
        ORDER BY 1
        ON CONFLICT (tenant_id) DO UPDATE SET version = s.version + 1;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE mirror_facets f SET count = f.count - d.n
        FROM (SELECT u.tenant_id, p.section, p.key, count(*) AS n
              FROM old_rows u CROSS JOIN LATERAL mirror_facet_pairs(u.user_type, u.office_location, u.department,
                                                                    u.mail, u.user_principal_name) p
              WHERE u.removed IS NULL GROUP BY 1, 2, 3) d
        WHERE f.tenant_id = d.tenant_id AND f.section = d.section AND f.key = d.key;
        DELETE FROM mirror_facets f WHERE f.count <= 0
            AND f.tenant_id IN (SELECT DISTINCT tenant_id FROM old_rows);
        INSERT INTO mirror_group_count_state AS s (tenant_id)
        SELECT DISTINCT u.tenant_id FROM old_rows u WHERE u.removed IS NULL AND EXISTS (
            SELECT 1 FROM entra_group_members m WHERE m.tenant_id = u.tenant_id AND m.member_id = u.id)
        ORDER BY 1
        ON CONFLICT (tenant_id) DO UPDATE SET version = s.version + 1;
    ELSE
        -- Only rows whose counted properties or presence changed; the rest cancel out and are skipped early.
        INSERT INTO mirror_facets AS f (tenant_id, section, key, value, count)
        SELECT c.tenant_id, p.section, p.key, min(p.value) FILTER (WHERE c.sign > 0), sum(c.sign)
        FROM (SELECT n.tenant_id, 1 AS sign, n.user_type, n.office_location, n.department, n.mail,
                     n.user_principal_name, n.removed
              FROM new_rows n JOIN old_rows o ON o.tenant_id = n.tenant_id AND o.id = n.id
              WHERE (n.user_type, n.office_location, n.department, n.mail, n.user_principal_name, n.removed IS NULL)
                    IS DISTINCT FROM
                    (o.user_type, o.office_location, o.department, o.mail, o.user_principal_name, o.removed IS NULL)
              UNION ALL
              SELECT o.tenant_id, -1, o.user_type, o.office_location, o.department, o.mail,
                     o.user_principal_name, o.removed
              FROM old_rows o JOIN new_rows n ON o.tenant_id = n.tenant_id AND o.id = n.id
              WHERE (n.user_type, n.office_location, n.department, n.mail, n.user_principal_name, n.removed IS NULL)
                    IS DISTINCT FROM
                    (o.user_type, o.office_location, o.department, o.mail, o.user_principal_name, o.removed IS NULL)
             ) c
        CROSS JOIN LATERAL mirror_facet_pairs(c.user_type, c.office_location, c.department, c.mail,
                                              c.user_principal_name) p
        WHERE c.removed IS NULL
        GROUP BY 1, 2, 3 HAVING sum(c.sign) <> 0 ORDER BY 1, 2, 3
        ON CONFLICT (tenant_id, section, key) DO UPDATE
            SET count = f.count + excluded.count, value = least(f.value, excluded.value);
        DELETE FROM mirror_facets f WHERE f.count <= 0
            AND f.tenant_id IN (SELECT DISTINCT tenant_id FROM old_rows);
        INSERT INTO mirror_group_count_state AS s (tenant_id)
        SELECT DISTINCT n.tenant_id FROM new_rows n JOIN old_rows o ON o.tenant_id = n.tenant_id AND o.id = n.id
        WHERE (n.removed IS NULL) <> (o.removed IS NULL) AND EXISTS (
            SELECT 1 FROM entra_group_members m WHERE m.tenant_id = n.tenant_id AND m.member_id = n.id)
        ORDER BY 1
        ON CONFLICT (tenant_id) DO UPDATE SET version = s.version + 1;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER entra_users_facets_ins AFTER INSERT ON entra_users REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mirror_facets_apply();
CREATE TRIGGER entra_users_facets_upd AFTER UPDATE ON entra_users
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mirror_facets_apply();
CREATE TRIGGER entra_users_facets_del AFTER DELETE ON entra_users REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mirror_facets_apply();

-- The mirror as it is now, counted once.
INSERT INTO mirror_facets (tenant_id, section, key, value, count)
SELECT u.tenant_id, p.section, p.key, min(p.value), count(*)
FROM entra_users u CROSS JOIN LATERAL mirror_facet_pairs(u.user_type, u.office_location, u.department,
                                                         u.mail, u.user_principal_name) p
WHERE u.removed IS NULL
GROUP BY 1, 2, 3;
INSERT INTO mirror_group_count_state (tenant_id) SELECT DISTINCT tenant_id FROM entra_groups;

-- 4. Change notifications accepted by the worker, per tenant and UTC hour (the tenant page's chart). Rows
--    older than the retention are deleted when a tenant's new hour starts (worker/store/sync.py).
CREATE TABLE tenant_notifications_hourly (
    tenant_id  text NOT NULL,
    hour       timestamptz NOT NULL,
    count      bigint NOT NULL,
    PRIMARY KEY (tenant_id, hour)
);

-- 5. The last full resync's drift: End Users it created, updated and deactivated (changes notifications had
--    missed), written with the resync's status (worker/store/sync.py `record_tenant_status`).
ALTER TABLE tenant_sync_status ADD COLUMN last_resync_drift jsonb;
