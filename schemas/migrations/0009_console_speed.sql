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

-- The users' side: value counts by the rows a statement added (+1) and removed (-1), one aggregate over the
-- transition tables (an UPDATE's rows only where a counted property or the presence changed); a user that
-- became present or absent and belongs to a group bumps the group counts' version. The pairs are those of
-- worker/store/admin.py's `_OPTION_VALUES_SQL`, written out here.
CREATE FUNCTION mirror_facets_apply() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    src text;
    presence text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        src := 'SELECT 1 AS sign, * FROM new_rows';
        presence := 'SELECT tenant_id, id FROM new_rows WHERE removed IS NULL';
    ELSIF TG_OP = 'DELETE' THEN
        src := 'SELECT -1 AS sign, * FROM old_rows';
        presence := 'SELECT tenant_id, id FROM old_rows WHERE removed IS NULL';
    ELSE
        src := $q$
            SELECT s.* FROM new_rows n JOIN old_rows o ON o.tenant_id = n.tenant_id AND o.id = n.id
            CROSS JOIN LATERAL (SELECT 1 AS sign, n.* UNION ALL SELECT -1, o.*) s
            WHERE (n.user_type, n.office_location, n.department, n.mail, n.user_principal_name, n.removed IS NULL)
                  IS DISTINCT FROM
                  (o.user_type, o.office_location, o.department, o.mail, o.user_principal_name, o.removed IS NULL)$q$;
        presence := $q$
            SELECT n.tenant_id, n.id FROM new_rows n JOIN old_rows o ON o.tenant_id = n.tenant_id AND o.id = n.id
            WHERE (n.removed IS NULL) <> (o.removed IS NULL)$q$;
    END IF;
    EXECUTE format($q$
        INSERT INTO mirror_facets AS f (tenant_id, section, key, value, count)
        SELECT c.tenant_id, v.section, v.k, min(v.value) FILTER (WHERE c.sign > 0), sum(c.sign)
        FROM (SELECT u.tenant_id, u.sign, btrim(u.user_type) AS user_type, btrim(u.office_location) AS office_location,
                     btrim(u.department) AS department,
                     CASE WHEN position('@' in u.mail) > 0
                          THEN lower(btrim(reverse(split_part(reverse(u.mail), '@', 1)))) END AS mail_domain,
                     CASE WHEN position('#ext#' in u.upn) > 0 THEN
                              CASE WHEN position('_' in split_part(u.upn, '#ext#', 1)) > 0
                                   THEN reverse(split_part(reverse(split_part(u.upn, '#ext#', 1)), '_', 1))
                                   ELSE '' END
                          WHEN position('@' in u.upn) > 0
                          THEN btrim(reverse(split_part(reverse(u.upn), '@', 1))) END AS upn_domain
              FROM (SELECT r.*, lower(btrim(r.user_principal_name)) AS upn FROM (%s) r WHERE r.removed IS NULL) u
             ) c
        CROSS JOIN LATERAL (VALUES
            ('total', '', NULL),
            ('user_types', lower(c.user_type), c.user_type),
            ('office_locations', lower(c.office_location), c.office_location),
            ('departments', lower(c.department), c.department),
            ('domains', c.mail_domain, c.mail_domain),
            ('domains', CASE WHEN c.upn_domain IS DISTINCT FROM c.mail_domain THEN c.upn_domain END, c.upn_domain)
        ) AS v(section, k, value)
        WHERE v.k IS NOT NULL AND (v.k <> '' OR v.section = 'total')
        GROUP BY 1, 2, 3 HAVING sum(c.sign) <> 0 ORDER BY 1, 2, 3
        ON CONFLICT (tenant_id, section, key) DO UPDATE
            SET count = f.count + excluded.count, value = least(f.value, excluded.value)$q$, src);
    IF TG_OP <> 'INSERT' THEN
        DELETE FROM mirror_facets f WHERE f.count <= 0
            AND f.tenant_id IN (SELECT DISTINCT tenant_id FROM old_rows);
    END IF;
    EXECUTE format($q$
        INSERT INTO mirror_group_count_state AS s (tenant_id)
        SELECT DISTINCT p.tenant_id FROM (%s) p
        WHERE EXISTS (SELECT 1 FROM entra_group_members m WHERE m.tenant_id = p.tenant_id AND m.member_id = p.id)
        ORDER BY 1
        ON CONFLICT (tenant_id) DO UPDATE SET version = s.version + 1$q$, presence);
    RETURN NULL;
END $fn$;

CREATE TRIGGER entra_users_facets_ins AFTER INSERT ON entra_users REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mirror_facets_apply();
CREATE TRIGGER entra_users_facets_upd AFTER UPDATE ON entra_users
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mirror_facets_apply();
CREATE TRIGGER entra_users_facets_del AFTER DELETE ON entra_users REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mirror_facets_apply();

-- The mirror as it is now, counted once (the INSERT branch's aggregate over every present user).
INSERT INTO mirror_facets (tenant_id, section, key, value, count)
SELECT c.tenant_id, v.section, v.k, min(v.value), count(*)
FROM (SELECT u.tenant_id, btrim(u.user_type) AS user_type, btrim(u.office_location) AS office_location,
             btrim(u.department) AS department,
             CASE WHEN position('@' in u.mail) > 0
                  THEN lower(btrim(reverse(split_part(reverse(u.mail), '@', 1)))) END AS mail_domain,
             CASE WHEN position('#ext#' in u.upn) > 0 THEN
                      CASE WHEN position('_' in split_part(u.upn, '#ext#', 1)) > 0
                           THEN reverse(split_part(reverse(split_part(u.upn, '#ext#', 1)), '_', 1))
                           ELSE '' END
                  WHEN position('@' in u.upn) > 0
                  THEN btrim(reverse(split_part(reverse(u.upn), '@', 1))) END AS upn_domain
      FROM (SELECT r.*, lower(btrim(r.user_principal_name)) AS upn FROM entra_users r WHERE r.removed IS NULL) u
     ) c
CROSS JOIN LATERAL (VALUES
    ('total', '', NULL),
    ('user_types', lower(c.user_type), c.user_type),
    ('office_locations', lower(c.office_location), c.office_location),
    ('departments', lower(c.department), c.department),
    ('domains', c.mail_domain, c.mail_domain),
    ('domains', CASE WHEN c.upn_domain IS DISTINCT FROM c.mail_domain THEN c.upn_domain END, c.upn_domain)
) AS v(section, k, value)
WHERE v.k IS NOT NULL AND (v.k <> '' OR v.section = 'total')
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
