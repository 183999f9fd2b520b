-- One held run per Organization, and what it holds.
--
-- A run whose deactivations the accidental-deletion guard holds used to be followed by another held run at
-- every later change batch (the held users stay flagged, so each batch decided them again). Now later batches
-- add to the Organization's held run, which keeps the Entra object ids it holds: dismissing it un-flags them
-- (so the next batch does not hold them again), and `explain` can say an End User's deactivation is held.
-- Older duplicates are closed first: the newest held run of each Organization stays held.

ALTER TABLE sync_runs ADD COLUMN held_object_ids text[] NOT NULL DEFAULT '{}';

UPDATE sync_runs r SET status = 'succeeded',
       warnings = r.warnings || '["superseded by a later held run of the Organization"]'::jsonb
WHERE r.status = 'held' AND EXISTS (
    SELECT 1 FROM sync_runs n WHERE n.organization_id = r.organization_id AND n.status = 'held'
      AND (n.requested_at, n.id) > (r.requested_at, r.id));

CREATE UNIQUE INDEX sync_runs_one_held ON sync_runs (organization_id) WHERE status = 'held';
