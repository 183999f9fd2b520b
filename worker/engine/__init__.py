"""The sync engine: the units of work that bring Entra ID into End Users, and the work beside them.

`sync` (the `SyncEngine` facade: the units of work, under the tenant's lock) uses `pull` (Graph into the tenant
mirror, with `enrich`), `projection` and `chunks` (mirror users into End Users, pipelined) and `runs` (a run's
counts and records, the accidental-deletion guard). `subscriptions` keeps each tenant's Graph subscriptions;
`explain` answers why a user is (or is not) an End User.
"""
