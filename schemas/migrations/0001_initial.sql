-- Initial schema. Applied by `entra-sync migrate` (worker/store/migrations.py) inside one transaction,
-- under an advisory lock, so concurrent runs are safe. Never edit an applied migration: add a new file.

-- Configuration -----------------------------------------------------------------------------------------
CREATE TABLE microsoft_tenants (
    tenant_id       text PRIMARY KEY,                 -- Entra directory (tenant) id
    display_name    text NOT NULL,
    client_id       text NOT NULL,
    client_secret   text NOT NULL,                    -- never returned by the API, never logged
    default_domain  text,
    capabilities    jsonb NOT NULL DEFAULT '{}',      -- {"entra_p1": bool, "intune": bool} as last observed
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE psa_tenants (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                 text NOT NULL UNIQUE,
    microsoft_tenant_id  text REFERENCES microsoft_tenants (tenant_id),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE organizations (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name           text NOT NULL,
    psa_tenant_id  uuid NOT NULL REFERENCES psa_tenants (id),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX organizations_psa_tenant ON organizations (psa_tenant_id);

CREATE TABLE org_user_syncs (
    organization_id  uuid PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    status           text NOT NULL CHECK (status IN ('enabled', 'disabled')),
    filters          jsonb NOT NULL,
    enabled_at       timestamptz,
    disabled_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Mirror of each Microsoft tenant ----------------------------------------------------------------------
CREATE TABLE entra_users (
    tenant_id         text NOT NULL,
    id                text NOT NULL,                  -- Entra object id
    display_name      text,
    given_name        text,
    surname           text,
    mail              text,
    user_principal_name text,
    business_phones   text[] NOT NULL DEFAULT '{}',
    mobile_phone      text,
    street_address    text,
    city              text,
    state             text,
    postal_code       text,
    country           text,
    job_title         text,
    department        text,
    office_location   text,
    user_type         text,
    account_enabled   boolean,
    assigned_licenses text[] NOT NULL DEFAULT '{}',   -- skuIds of assignedLicenses, sorted
    -- delta @removed reason, or 'absent' from a complete, successful full listing; NULL while present
    removed           text CHECK (removed IN ('changed', 'deleted', 'absent')),
    -- Enrichment, filled by the full resync; NULL = not known (capability missing or never seen).
    last_sign_in_at   timestamptz,
    mfa               jsonb,                          -- {"registered","capable","methods","preferred_method"}
    device_macs       text[] NOT NULL DEFAULT '{}',   -- normalised (12 lowercase hex digits)
    content_hash      bytea NOT NULL,
    seen_at           timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

-- Mirror users changed since they were last projected into End Users. A narrow table of its own, so that
-- flagging and clearing never rewrites the wide mirror rows (100,000 users → no dead-row churn).
CREATE TABLE entra_user_dirty (
    tenant_id  text NOT NULL,
    id         text NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE entra_groups (
    tenant_id     text NOT NULL,
    id            text NOT NULL,
    display_name  text,
    removed       text,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

-- Direct memberships (users and nested groups); transitive membership is derived from these.
CREATE TABLE entra_group_members (
    tenant_id   text NOT NULL,
    group_id    text NOT NULL,
    member_id   text NOT NULL,
    member_type text NOT NULL DEFAULT 'user' CHECK (member_type IN ('user', 'group', 'other')),
    PRIMARY KEY (tenant_id, group_id, member_id)
);
CREATE INDEX entra_group_members_member ON entra_group_members (tenant_id, member_id);

CREATE TABLE subscribed_skus (
    tenant_id         text NOT NULL,
    sku_id            text NOT NULL,
    sku_part_number   text NOT NULL,
    PRIMARY KEY (tenant_id, sku_id)
);

CREATE TABLE delta_links (
    tenant_id   text NOT NULL,
    resource    text NOT NULL CHECK (resource IN ('users', 'groups')),
    link        text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, resource)
);

CREATE TABLE graph_subscriptions (
    id                    text PRIMARY KEY,          -- Graph subscription id
    tenant_id             text NOT NULL,
    resource              text NOT NULL,
    change_type           text NOT NULL,
    notification_url      text NOT NULL,
    expires_at            timestamptz NOT NULL,
    last_notification_at  timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    renewed_at            timestamptz
);
CREATE INDEX graph_subscriptions_tenant ON graph_subscriptions (tenant_id);

CREATE TABLE tenant_sync_status (
    tenant_id               text PRIMARY KEY,
    last_delta_at           timestamptz,
    last_full_resync_at     timestamptz,
    last_notification_at    timestamptz,
    last_error              text,
    updated_at              timestamptz NOT NULL DEFAULT now()
);

-- Product data ------------------------------------------------------------------------------------------
CREATE TABLE sync_runs (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    kind             text NOT NULL,                  -- org-sync | resync | delta
    organization_id  uuid REFERENCES organizations (id) ON DELETE SET NULL,
    tenant_id        text,
    status           text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'held')),
    counts           jsonb NOT NULL DEFAULT '{}',
    warnings         jsonb NOT NULL DEFAULT '[]',    -- e.g. missing capabilities
    error            text,
    requested_at     timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz
);
CREATE INDEX sync_runs_org ON sync_runs (organization_id, requested_at DESC);

CREATE TABLE end_users (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id    uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    first_name         text,
    last_name          text,
    email              text,
    phone              text,
    mobile             text,
    street             text,
    city               text,
    state              text,
    postal_code        text,
    job_title          text,
    sync_state         text NOT NULL DEFAULT 'manual'
                       CHECK (sync_state IN ('manual', 'synced', 'out_of_scope', 'sync_disabled', 'deactivated')),
    sync_state_reason  text,
    entra_tenant_id    text,
    entra_object_id    text,
    microsoft          jsonb,
    content_hash       bytea,
    last_synced_at     timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, entra_tenant_id, entra_object_id)
);
CREATE UNIQUE INDEX end_users_org_email ON end_users (organization_id, lower(email)) WHERE email IS NOT NULL;

CREATE TABLE end_user_changes (
    id           bigserial PRIMARY KEY,
    end_user_id  uuid NOT NULL REFERENCES end_users (id) ON DELETE CASCADE,
    run_id       uuid REFERENCES sync_runs (id) ON DELETE SET NULL,
    field        text NOT NULL,
    old_value    text,
    new_value    text,
    changed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX end_user_changes_user ON end_user_changes (end_user_id, id);

CREATE TABLE assets (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name             text NOT NULL,
    mac_addresses    text[] NOT NULL DEFAULT '{}',   -- normalised (12 lowercase hex digits)
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX assets_macs ON assets USING gin (mac_addresses);

CREATE TABLE end_user_assets (
    end_user_id  uuid NOT NULL REFERENCES end_users (id) ON DELETE CASCADE,
    asset_id     uuid NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    PRIMARY KEY (end_user_id, asset_id)
);

CREATE TABLE review_items (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    entra_tenant_id  text NOT NULL,
    entra_object_id  text NOT NULL,
    reason           text NOT NULL,
    candidate_ids    uuid[] NOT NULL DEFAULT '{}',
    status           text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    resolution       jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    resolved_at      timestamptz
);
CREATE UNIQUE INDEX review_items_open ON review_items (organization_id, entra_tenant_id, entra_object_id)
    WHERE status = 'open';
