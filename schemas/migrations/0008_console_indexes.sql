-- Indexes for the operator console (worker/console/, worker/store/console.py).
--
-- 1. An Organization's End Users are paged by name with a keyset (last name, first name, id), never with
--    OFFSET: an Organization may hold 100,000. The expression index serves the page and the total alike.
-- 2. A Microsoft tenant's page plots its runs of the last 24 hours; sync_runs was indexed by Organization
--    only, and tenant-wide runs (delta, resync) carry none.
CREATE INDEX end_users_org_name ON end_users
    (organization_id, lower(coalesce(last_name, '')), lower(coalesce(first_name, '')), id);
CREATE INDEX sync_runs_tenant ON sync_runs (tenant_id, requested_at DESC);
