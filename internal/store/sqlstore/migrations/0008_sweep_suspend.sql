-- Sweeps can be suspended: no scheduled firing is claimed while suspended is 1 (the claim's
-- compare-and-set requires 0), so the suspension holds on every hub replica and across
-- restarts. Who suspended it, when, how (spec, api, cli, ui) and why are kept with it.
ALTER TABLE sweeps ADD COLUMN suspended SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE sweeps ADD COLUMN suspended_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sweeps ADD COLUMN suspended_by TEXT NOT NULL DEFAULT '';
ALTER TABLE sweeps ADD COLUMN suspended_via TEXT NOT NULL DEFAULT '';
ALTER TABLE sweeps ADD COLUMN suspend_reason TEXT NOT NULL DEFAULT '';
