-- Microsoft tenant ids are GUIDs stored lower-case (issue 11). Graph writes them lower-case in notifications
-- and the clientState HMAC lower-cases them, so a tenant registered as typed (upper-case) had every
-- notification dropped. This moves each upper- or mixed-case GUID tenant, with everything keyed by its id,
-- to the lower-case form. A tenant registered twice (both forms) is left as it is with a warning: remove one
-- with DELETE /api/v1/microsoft-tenants/{id}. Ids that are not GUIDs (domain names) cannot be resolved here
-- without Graph; they keep working as before and the API refuses new ones.
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT tenant_id AS old, lower(tenant_id) AS new FROM microsoft_tenants
        WHERE tenant_id <> lower(tenant_id)
          AND tenant_id ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
    LOOP
        IF EXISTS (SELECT 1 FROM microsoft_tenants WHERE tenant_id = t.new) THEN
            RAISE WARNING 'Microsoft tenant % is registered twice (also as %): left as is, remove one', t.old, t.new;
            CONTINUE;
        END IF;
        -- A new row first, so the PSA tenants' foreign key always has something to point at.
        INSERT INTO microsoft_tenants (tenant_id, display_name, client_id, client_secret, default_domain,
                                       capabilities, created_at, updated_at)
        SELECT t.new, display_name, client_id, client_secret, default_domain, capabilities, created_at, now()
        FROM microsoft_tenants WHERE tenant_id = t.old;
        UPDATE psa_tenants SET microsoft_tenant_id = t.new WHERE microsoft_tenant_id = t.old;
        UPDATE entra_users SET tenant_id = t.new WHERE tenant_id = t.old;
        UPDATE entra_user_dirty SET tenant_id = t.new WHERE tenant_id = t.old;
        UPDATE entra_user_enrichment SET tenant_id = t.new WHERE tenant_id = t.old;
        UPDATE entra_user_sign_ins SET tenant_id = t.new WHERE tenant_id = t.old;
        UPDATE entra_groups SET tenant_id = t.new WHERE tenant_id = t.old;
        UPDATE entra_group_members SET tenant_id = t.new WHERE tenant_id = t.old;
        UPDATE subscribed_skus SET tenant_id = t.new WHERE tenant_id = t.old;
        UPDATE delta_links SET tenant_id = t.new WHERE tenant_id = t.old;
        UPDATE graph_subscriptions SET tenant_id = t.new WHERE tenant_id = t.old;
        UPDATE tenant_sync_status SET tenant_id = t.new WHERE tenant_id = t.old;
        UPDATE sync_runs SET tenant_id = t.new WHERE tenant_id = t.old;
        UPDATE end_users SET entra_tenant_id = t.new WHERE entra_tenant_id = t.old;
        UPDATE review_items SET entra_tenant_id = t.new WHERE entra_tenant_id = t.old;
        DELETE FROM microsoft_tenants WHERE tenant_id = t.old;
    END LOOP;
END
$$;
