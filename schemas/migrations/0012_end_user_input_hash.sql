-- What an End User was projected from (issue 12, the 100,000-user preview in under 2 s): the sync stores with
-- every End User it writes the SHA-256 of everything the projection read (the mirror user's fingerprint,
-- worker/store/mirror.py INPUTS_HASH, then the Organization's licence names, Assets and projection version,
-- worker/core/projection.py `input_hash`). While a `synced` End User's input hash is the one its Entra user
-- has now, it holds that user's projection: reconcile counts it unchanged without projecting it, and the
-- filter preview reads only what the filters look at for it.
--
-- NULL: not known (written before this migration, or by anything but the sync's creates and updates). The
-- next sync that finds such an End User unchanged stores its hash.

ALTER TABLE end_users ADD COLUMN input_hash bytea;

-- Any other write to an End User (an operator's edit, unlock, exclusion, disable, undo …) makes the hash
-- stale: it no longer says what the End User holds. Rather than trust every writer, present and future, to
-- clear it, an update that changes anything of the row but leaves the hash as it was clears it.
CREATE FUNCTION end_users_input_hash_stale() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.input_hash IS NOT DISTINCT FROM OLD.input_hash
       AND (to_jsonb(NEW) - 'input_hash' - 'updated_at' - 'last_synced_at')
           IS DISTINCT FROM (to_jsonb(OLD) - 'input_hash' - 'updated_at' - 'last_synced_at') THEN
        NEW.input_hash := NULL;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER end_users_input_hash_stale BEFORE UPDATE ON end_users
    FOR EACH ROW WHEN (OLD.input_hash IS NOT NULL) EXECUTE FUNCTION end_users_input_hash_stale();
