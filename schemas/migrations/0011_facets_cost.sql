-- What migration 0009's kept value counts cost the mirror writes (issue 13): its trigger aggregated every
-- statement's transition tables with per-statement EXECUTE format planning and upserts, so a first sync's
-- COPY of 100,000 mirror users took 9.7 s instead of 1.4 s and an UPDATE of all of them 27.4 s instead of
-- 4.0 s. Now:
--
-- * A statement that writes more than 500 users (a sync's batch of a full listing: worker/sync.py writes up
--   to 2,000 per statement) only marks its tenants' counts stale (`mirror_facets_stale`); the next read of
--   the counts (worker/store/admin.py `options`) recounts them once from scratch (`mirror_facets_recount`,
--   one GROUP BY: 0009's initial INSERT for one tenant). Group counts are bumped as before (they are
--   recounted lazily already).
-- * A smaller statement (a delta's changes) keeps incremental upkeep, in static SQL (plans cached per
--   trigger, no EXECUTE format), an UPDATE as +new / -old rows of one UNION ALL (no join of two transition
--   tables without statistics; unchanged rows cancel out in the sum), and nothing at all for an empty one.
--
-- Every writer of a tenant's kept counts and the recount hold the transaction-level advisory lock
-- `mirror_facets_lock(tenant)`, so a recount (which takes it with try, after the writers committed) sees
-- every write whose delta it replaces, and a writer after it applies its delta on top of the recount.

CREATE TABLE mirror_facets_stale (
    tenant_id  text PRIMARY KEY,
    since      timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION mirror_facets_lock_key(p_tenant text) RETURNS bigint LANGUAGE sql IMMUTABLE
    RETURN hashtextextended('mirror_facets ' || p_tenant, 0);

-- The tenant's value counts from scratch (0009's initial INSERT, for one tenant); the caller holds the lock.
CREATE FUNCTION mirror_facets_recount(p_tenant text) RETURNS void LANGUAGE sql AS $fn$
DELETE FROM mirror_facets WHERE tenant_id = p_tenant;
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
      FROM (SELECT r.*, lower(btrim(r.user_principal_name)) AS upn FROM entra_users r
            WHERE r.tenant_id = p_tenant AND r.removed IS NULL) u
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
DELETE FROM mirror_facets_stale WHERE tenant_id = p_tenant;
$fn$;

-- One trigger function per operation, so each reads its transition tables in static SQL: a statement's signed
-- user rows (+1 added, -1 removed) go into the kept counts by 0009's aggregate.
DROP TRIGGER entra_users_facets_ins ON entra_users;
DROP TRIGGER entra_users_facets_upd ON entra_users;
DROP TRIGGER entra_users_facets_del ON entra_users;
DROP FUNCTION mirror_facets_apply();

CREATE FUNCTION mirror_facets_bulk_limit() RETURNS bigint LANGUAGE sql IMMUTABLE RETURN 500;

CREATE FUNCTION mirror_facets_apply_ins() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    n bigint;
BEGIN
    SELECT count(*) INTO n FROM new_rows;
    IF n = 0 THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(mirror_facets_lock_key(t.tenant_id))
    FROM (SELECT DISTINCT tenant_id FROM new_rows ORDER BY 1) t;
    IF n > mirror_facets_bulk_limit() THEN
        INSERT INTO mirror_facets_stale (tenant_id) SELECT DISTINCT tenant_id FROM new_rows ORDER BY 1
        ON CONFLICT DO NOTHING;
        INSERT INTO mirror_group_count_state AS s (tenant_id) SELECT DISTINCT tenant_id FROM new_rows ORDER BY 1
        ON CONFLICT (tenant_id) DO UPDATE SET version = s.version + 1;
        RETURN NULL;
    END IF;
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
          FROM (SELECT 1 AS sign, r.tenant_id, r.user_type, r.office_location, r.department, r.mail,
                       lower(btrim(r.user_principal_name)) AS upn
                FROM new_rows r WHERE r.removed IS NULL) u
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
        SET count = f.count + excluded.count, value = least(f.value, excluded.value);
    INSERT INTO mirror_group_count_state AS s (tenant_id)
    SELECT DISTINCT p.tenant_id FROM new_rows p
    WHERE p.removed IS NULL
      AND EXISTS (SELECT 1 FROM entra_group_members m WHERE m.tenant_id = p.tenant_id AND m.member_id = p.id)
    ORDER BY 1
    ON CONFLICT (tenant_id) DO UPDATE SET version = s.version + 1;
    RETURN NULL;
END $fn$;

CREATE FUNCTION mirror_facets_apply_del() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    n bigint;
BEGIN
    SELECT count(*) INTO n FROM old_rows;
    IF n = 0 THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(mirror_facets_lock_key(t.tenant_id))
    FROM (SELECT DISTINCT tenant_id FROM old_rows ORDER BY 1) t;
    IF n > mirror_facets_bulk_limit() THEN
        INSERT INTO mirror_facets_stale (tenant_id) SELECT DISTINCT tenant_id FROM old_rows ORDER BY 1
        ON CONFLICT DO NOTHING;
        INSERT INTO mirror_group_count_state AS s (tenant_id) SELECT DISTINCT tenant_id FROM old_rows ORDER BY 1
        ON CONFLICT (tenant_id) DO UPDATE SET version = s.version + 1;
        RETURN NULL;
    END IF;
    INSERT INTO mirror_facets AS f (tenant_id, section, key, value, count)
    SELECT c.tenant_id, v.section, v.k, NULL, sum(c.sign)
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
          FROM (SELECT -1 AS sign, r.tenant_id, r.user_type, r.office_location, r.department, r.mail,
                       lower(btrim(r.user_principal_name)) AS upn
                FROM old_rows r WHERE r.removed IS NULL) u
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
        SET count = f.count + excluded.count, value = least(f.value, excluded.value);
    DELETE FROM mirror_facets f WHERE f.count <= 0
        AND f.tenant_id IN (SELECT DISTINCT tenant_id FROM old_rows);
    INSERT INTO mirror_group_count_state AS s (tenant_id)
    SELECT DISTINCT p.tenant_id FROM old_rows p
    WHERE p.removed IS NULL
      AND EXISTS (SELECT 1 FROM entra_group_members m WHERE m.tenant_id = p.tenant_id AND m.member_id = p.id)
    ORDER BY 1
    ON CONFLICT (tenant_id) DO UPDATE SET version = s.version + 1;
    RETURN NULL;
END $fn$;

CREATE FUNCTION mirror_facets_apply_upd() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    n bigint;
BEGIN
    SELECT count(*) INTO n FROM new_rows;
    IF n = 0 THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(mirror_facets_lock_key(t.tenant_id))
    FROM (SELECT tenant_id FROM new_rows UNION SELECT tenant_id FROM old_rows ORDER BY 1) t;
    IF n > mirror_facets_bulk_limit() THEN
        INSERT INTO mirror_facets_stale (tenant_id)
        SELECT tenant_id FROM new_rows UNION SELECT tenant_id FROM old_rows ORDER BY 1
        ON CONFLICT DO NOTHING;
        INSERT INTO mirror_group_count_state AS s (tenant_id)
        SELECT tenant_id FROM new_rows UNION SELECT tenant_id FROM old_rows ORDER BY 1
        ON CONFLICT (tenant_id) DO UPDATE SET version = s.version + 1;
        RETURN NULL;
    END IF;
    -- +1 for each new row, -1 for each old one: a row whose counted properties did not change cancels out.
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
          FROM (SELECT 1 AS sign, r.tenant_id, r.user_type, r.office_location, r.department, r.mail,
                       lower(btrim(r.user_principal_name)) AS upn
                FROM new_rows r WHERE r.removed IS NULL
                UNION ALL
                SELECT -1, r.tenant_id, r.user_type, r.office_location, r.department, r.mail,
                       lower(btrim(r.user_principal_name))
                FROM old_rows r WHERE r.removed IS NULL) u
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
        SET count = f.count + excluded.count, value = least(f.value, excluded.value);
    DELETE FROM mirror_facets f WHERE f.count <= 0
        AND f.tenant_id IN (SELECT tenant_id FROM old_rows UNION SELECT tenant_id FROM new_rows);
    -- Users that became present or absent and belong to a group move the group counts (hash join by key).
    INSERT INTO mirror_group_count_state AS s (tenant_id)
    SELECT DISTINCT n.tenant_id FROM new_rows n JOIN old_rows o ON o.tenant_id = n.tenant_id AND o.id = n.id
    WHERE (n.removed IS NULL) <> (o.removed IS NULL)
      AND EXISTS (SELECT 1 FROM entra_group_members m WHERE m.tenant_id = n.tenant_id AND m.member_id = n.id)
    ORDER BY 1
    ON CONFLICT (tenant_id) DO UPDATE SET version = s.version + 1;
    RETURN NULL;
END $fn$;

CREATE TRIGGER entra_users_facets_ins AFTER INSERT ON entra_users REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mirror_facets_apply_ins();
CREATE TRIGGER entra_users_facets_upd AFTER UPDATE ON entra_users
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mirror_facets_apply_upd();
CREATE TRIGGER entra_users_facets_del AFTER DELETE ON entra_users REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mirror_facets_apply_del();
