-- Reports of a county, town or community read a few communities over many days: by community
-- first, their rows are next to each other (the primary key, by day first, serves the city).
-- Small tables (a row per community and day): built in seconds, even on a big archive.
CREATE INDEX incident_rollup_community ON incident_rollup (community_id, day);
CREATE INDEX incident_rollup_kinds_community ON incident_rollup_kinds (community_id, day);
