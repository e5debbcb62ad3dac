-- Generated history for the query benchmark (tests/bench_queries.rs): the simulated city's
-- area registry (1 city, 10 counties, 150 towns, 1,300 communities, 13,000 grids) and
-- :n incidents spread evenly over the 365 days before :end_ms, inserted in time order as the
-- sink would. Shapes follow the simulated city: 90 % button presses (a fifth urgent), 10 %
-- camera alerts; 99.9 % closed, 95 % of those resolved; settled 80 % at the grid worker, then
-- supervisor, patrol, police desk; acknowledged within 0.5-10 min, closed within 10 min-3 h;
-- some escalations, reassignments and repeat presses. The snapshot is a real protobuf
-- Incident (ids, grid, household, device, kind) of the size the router writes.
-- psql-free: the benchmark substitutes $N$ (incidents) and $END$ (ms since the epoch).

INSERT INTO areas (area_id, parent_id, level, name)
SELECT 'city', '', 'city', 'Simulated city'
UNION ALL
SELECT format('county-%s', c), 'city', 'county', format('County %s', c)
  FROM generate_series(0, 9) AS c
UNION ALL
SELECT format('town-%s', t), format('county-%s', t / 15), 'town', format('Town %s', t)
  FROM generate_series(0, 149) AS t
UNION ALL
SELECT format('community-%s', m), format('town-%s', m * 150 / 1300), 'community',
       format('Community %s', m)
  FROM generate_series(0, 1299) AS m
UNION ALL
SELECT format('g-%s', g), format('community-%s', g / 10), 'grid', format('Grid %s', g)
  FROM generate_series(0, 12999) AS g;

SELECT setseed(0.11);

INSERT INTO incidents (incident_id, grid_id, state, source, priority, kind, household_id,
  device_id, camera_id, reported_at, opened_at, acknowledged_at, closed_at, resolution,
  closed_by, settled_level, revision, escalations, reassignments, repeat_presses, snapshot)
SELECT id, grid, state, source, priority, kind, household, device, camera, opened,
       opened, acked, closed, resolution, closed_by, settled, revision, escalations,
       reassignments, repeats,
       -- Incident { incident_id = 1, grid_id = 2, state = 3, source = 5, household_id = 6,
       --   device_id = 7, camera_id = 9, closed_by = 25, revision = 26,
       -- resolution_note = 24, recent_event_ids = 21 } in protobuf.
       '\x0a'::bytea || set_byte('\x00'::bytea, 0, length(id)) || convert_to(id, 'UTF8')
         || '\x12'::bytea || set_byte('\x00'::bytea, 0, length(grid)) || convert_to(grid, 'UTF8')
         || set_byte('\x1800'::bytea, 1, state)
         || set_byte('\x2800'::bytea, 1, source)
         || '\x32'::bytea || set_byte('\x00'::bytea, 0, length(household))
         || convert_to(household, 'UTF8')
         || '\x3a'::bytea || set_byte('\x00'::bytea, 0, length(device))
         || convert_to(device, 'UTF8')
         || '\x4a'::bytea || set_byte('\x00'::bytea, 0, length(camera))
         || convert_to(camera, 'UTF8')
         || '\xca01'::bytea || set_byte('\x00'::bytea, 0, length(closed_by))
         || convert_to(closed_by, 'UTF8')
         || set_byte('\xd00100'::bytea, 2, revision::int)
         || '\xaa01'::bytea || set_byte('\x00'::bytea, 0, length(id) + 8)
         || convert_to(id || ':press-1', 'UTF8')
         || '\xc201'::bytea || set_byte('\x00'::bytea, 0, length(note)) || convert_to(note, 'UTF8')
FROM (
  SELECT i, id, grid, opened, source, state,
         CASE WHEN source = 1 AND r2 < 0.2 THEN 2 ELSE 1 END AS priority,
         CASE WHEN source = 1 THEN CASE WHEN r2 < 0.2 THEN 'button:urgent' ELSE 'button:normal' END
              WHEN r2 < 0.5 THEN 'camera:fall' WHEN r2 < 0.8 THEN 'camera:fire'
              ELSE 'camera:crowd' END AS kind,
         CASE WHEN source = 1 THEN format('h-%s', (i * 7919) % 774000) ELSE '' END AS household,
         CASE WHEN source = 1 THEN format('dev-%s', (i * 7919) % 774000) ELSE '' END AS device,
         CASE WHEN source = 2 THEN format('cam-%s-%s', grid, (i % 4)) ELSE '' END AS camera,
         CASE WHEN state >= 3 THEN opened + make_interval(secs => 30 + r3 * 570) END AS acked,
         CASE WHEN state = 4 THEN opened + make_interval(secs => 600 + r4 * 10200) END AS closed,
         CASE WHEN state <> 4 THEN 0 WHEN r5 < 0.95 THEN 1 WHEN r5 < 0.97 THEN 2
              WHEN r5 < 0.99 THEN 3 ELSE 4 END AS resolution,
         CASE WHEN state = 4 THEN format('w-%s', (i * 31) % 15000) ELSE '' END AS closed_by,
         CASE WHEN state = 4 THEN 'visited; resident helped, follow-up call the next day'
              ELSE '' END AS note,
         CASE WHEN state <> 4 THEN NULL WHEN r6 < 0.80 THEN 1 WHEN r6 < 0.93 THEN 2
              WHEN r6 < 0.98 THEN 3 ELSE 4 END::int2 AS settled,
         CASE WHEN state = 4 THEN 5 ELSE 2 END + (r7 * 3)::int AS revision,
         CASE WHEN r7 < 0.05 THEN 1 ELSE 0 END AS escalations,
         CASE WHEN r7 < 0.08 THEN 1 ELSE 0 END AS reassignments,
         CASE WHEN r2 < 0.1 THEN 1 ELSE 0 END AS repeats
  FROM (
    SELECT i, format('inc-%s', i) AS id,
           format('g-%s', (i * 104729) % 13000) AS grid,
           to_timestamp(($END$ - 365 * 86400000::bigint
             + i * (365 * 86400000::bigint / $N$)) / 1000.0) AS opened,
           CASE WHEN random() < 0.9 THEN 1 ELSE 2 END AS source,
           CASE WHEN random() < 0.999 THEN 4 ELSE 1 + (random() * 2)::int END AS state,
           random() AS r2, random() AS r3, random() AS r4, random() AS r5, random() AS r6,
           random() AS r7
    FROM generate_series(1::bigint, $N$) AS i
  ) AS base
) AS shaped;
