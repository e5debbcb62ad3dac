-- Indexes for history and reports over millions of incidents (figures and plans:
-- docs/performance.md, "Archive queries over 10,000,000 incidents").
--
-- ListIncidents finds a page's keys first and fetches the 100 rows after, so both indexes
-- carry the filter columns and a page is an index-only scan:
-- - a period, newest first, of many grids (a county, the city): walk opened_at and keep the
--   grids asked for, stopping after one page;
-- - a period of few grids (a community): the grid index, a few hundred entries per grid.
-- Reports aggregate a period of an area's grids from the grid index alone (every column a
-- report reads is in it), never from the table's pages.
--
-- Building them on a large archive takes minutes and blocks the sink's writes meanwhile (it
-- lags, then catches up); the migration runs once, at the start of the new version.
DROP INDEX incidents_opened;
CREATE INDEX incidents_opened ON incidents (opened_at DESC, incident_id DESC)
    INCLUDE (grid_id, source, kind, state, resolution);
DROP INDEX incidents_grid_opened;
CREATE INDEX incidents_grid_opened ON incidents (grid_id, opened_at DESC, incident_id DESC)
    INCLUDE (source, kind, state, resolution, settled_level, acknowledged_at, closed_at,
             escalations, reassignments, repeat_presses);
