-- How each closed incident ended (helpgrid.v1.IncidentOutcome; 0 while open). Incidents archived
-- before outcomes existed get the outcome their resolution maps to (the contract's mapping:
-- resolved -> resolved on the spot, referred -> referred to the town, false alarm -> false
-- alarm, no action needed -> nobody there), as the sink does for such incidents from now on.
ALTER TABLE incidents ADD COLUMN outcome smallint NOT NULL DEFAULT 0;
UPDATE incidents SET outcome = CASE resolution WHEN 1 THEN 1 WHEN 2 THEN 3 WHEN 3 THEN 5
    WHEN 4 THEN 6 ELSE 0 END
  WHERE state = 4 AND resolution <> 0;
-- Lists filter and reports count by outcome from the indexes alone (see migration 3).
DROP INDEX incidents_opened;
CREATE INDEX incidents_opened ON incidents (opened_at DESC, incident_id DESC)
    INCLUDE (grid_id, source, kind, state, resolution, outcome);
DROP INDEX incidents_grid_opened;
CREATE INDEX incidents_grid_opened ON incidents (grid_id, opened_at DESC, incident_id DESC)
    INCLUDE (source, kind, state, resolution, outcome, settled_level, acknowledged_at,
             closed_at, escalations, reassignments, repeat_presses);
