-- Each unit of work ends the runs of its tenant that an earlier unit left `running` (`end_abandoned_runs`,
-- once per unit, thousands an hour): a partial index holds only the few running runs, so that look-up does
-- not walk the tenant's whole run history.
CREATE INDEX sync_runs_tenant_running ON sync_runs (tenant_id) WHERE status = 'running';
