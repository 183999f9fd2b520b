-- What an operator decides wins over the sync (issue 12): field ownership and locks, exclusions, a journal
-- that says who did what, runs that can be undone, and a leaver card.
--
-- 1. end_users.entra_fields: the fields Entra supplied a value for at the last sync. A field Entra never
--    supplied is the operator's and is never blanked; one Entra supplied and later cleared is cleared.
--    Existing linked End Users: every field they hold counts as Entra's (what the sync wrote before).
-- 2. end_users.locked_fields: fields an operator edited on a linked End User; the sync never overwrites them.
-- 3. end_users.leaver: what offboarding needs, recorded when the End User is deactivated (NULL otherwise).
-- 4. sync_state 'excluded' and end_user_exclusions: Entra users an operator deleted or excluded; the sync
--    never creates nor updates them until the exclusion is removed.
-- 5. end_user_changes.actor/action/reason: who changed it (the sync or an operator), as what, and why. One
--    event is the rows of one End User sharing (changed_at, run_id, actor, action).
-- 6. sync_runs.filters/undone_at: the filters a run applied (an undo is refused while they still apply), and
--    when the run was undone.

ALTER TABLE end_users
    ADD COLUMN entra_fields  text[] NOT NULL DEFAULT '{}',
    ADD COLUMN locked_fields text[] NOT NULL DEFAULT '{}',
    ADD COLUMN leaver        jsonb,
    DROP CONSTRAINT end_users_sync_state_check,
    ADD CONSTRAINT end_users_sync_state_check
        CHECK (sync_state IN ('manual', 'synced', 'out_of_scope', 'sync_disabled', 'deactivated', 'excluded'));

UPDATE end_users SET entra_fields = array_remove(ARRAY[
    CASE WHEN first_name IS NOT NULL THEN 'first_name' END, CASE WHEN last_name IS NOT NULL THEN 'last_name' END,
    CASE WHEN email IS NOT NULL THEN 'email' END, CASE WHEN phone IS NOT NULL THEN 'phone' END,
    CASE WHEN mobile IS NOT NULL THEN 'mobile' END, CASE WHEN street IS NOT NULL THEN 'street' END,
    CASE WHEN city IS NOT NULL THEN 'city' END, CASE WHEN state IS NOT NULL THEN 'state' END,
    CASE WHEN postal_code IS NOT NULL THEN 'postal_code' END, CASE WHEN job_title IS NOT NULL THEN 'job_title' END
], NULL)
WHERE entra_object_id IS NOT NULL AND sync_state <> 'manual';

CREATE INDEX end_users_leavers ON end_users (organization_id) WHERE leaver IS NOT NULL;

CREATE TABLE end_user_exclusions (
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    entra_tenant_id  text NOT NULL,
    entra_object_id  text NOT NULL,
    end_user_id      uuid,                            -- the End User kept (exclude) or deleted (delete)
    how              text NOT NULL CHECK (how IN ('deleted', 'excluded')),
    excluded_by      text NOT NULL DEFAULT 'operator',
    display_name     text,                            -- as the End User read when excluded
    email            text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, entra_tenant_id, entra_object_id)
);

ALTER TABLE end_user_changes
    ADD COLUMN actor  text NOT NULL DEFAULT 'sync' CHECK (actor IN ('sync', 'operator')),
    ADD COLUMN action text,
    ADD COLUMN reason text;
CREATE INDEX end_user_changes_run ON end_user_changes (run_id) WHERE run_id IS NOT NULL;

ALTER TABLE sync_runs
    ADD COLUMN filters   jsonb,
    ADD COLUMN undone_at timestamptz;
