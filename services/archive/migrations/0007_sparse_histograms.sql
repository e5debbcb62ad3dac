-- The rollup's histograms stored sparse: (bucket, count) pairs instead of one element per bucket.
--
-- A community's day holds ~20 incidents, so its dense histograms (up to ~170 buckets, one
-- int4 each) were ~90 % zeros, and a county's month report spent its time sending, decoding
-- and adding 3,900 rows of ~1.4 KB (PostgreSQL itself found them in ~4 ms). As pairs a row is
-- ~0.45 KB (docs/performance.md, "Archive reports from sparse histograms").
--
-- `ack_pairs` / `close_pairs`: a flat int4[] {bucket, count, bucket, count, ...}, buckets
-- (rollup::bucket, from 0) ascending, no zero counts. The columns are renamed so that no code
-- can read the new form as the old one.
--
-- The table is rebuilt (not updated in place, which would leave the old rows' space behind),
-- in (community, day) order: the order county and town reports read it in. On the
-- 10,000,000-incident benchmark archive (474,500 rollup rows) this took the time given in
-- docs/performance.md; the sink waits for it at start-up (README, "Upgrading a large archive").

-- A dense histogram (element i + 1 counts bucket i) as pairs.
CREATE FUNCTION archive_pairs(dense integer[]) RETURNS integer[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT coalesce(array_agg(x ORDER BY i, k), '{}')
    FROM unnest(dense) WITH ORDINALITY AS u(n, i),
         LATERAL (VALUES (1, i::integer - 1), (2, n)) AS v(k, x)
    WHERE n <> 0
    $$;

-- Pairs a + pairs b (either may hold negative counts: a delta); buckets whose sum is 0 dropped.
CREATE FUNCTION archive_pairs_add(a integer[], b integer[]) RETURNS integer[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT coalesce(array_agg(x ORDER BY bucket, k), '{}')
    FROM (SELECT p[j] AS bucket, sum(p[j + 1])::integer AS n
          FROM (VALUES (a), (b)) AS s(p),
               generate_series(1, coalesce(cardinality(p), 0) - 1, 2) AS j
          GROUP BY p[j]
          HAVING sum(p[j + 1]) <> 0) AS t,
         LATERAL (VALUES (1, bucket), (2, n)) AS v(k, x)
    $$;

-- A histogram of the indexes in `indexes` as pairs (NULL or empty: '{}').
CREATE FUNCTION archive_hist_pairs(indexes integer[]) RETURNS integer[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT coalesce(array_agg(y ORDER BY x, k), '{}')
    FROM (SELECT x, count(*)::integer AS n FROM unnest(indexes) AS x GROUP BY x) AS c,
         LATERAL (VALUES (1, x), (2, n)) AS v(k, y)
    $$;

CREATE TABLE incident_rollup_pairs (
    day            integer NOT NULL, -- days since 1970-01-01 (UTC) of opened_at
    community_id   text NOT NULL,
    requests       bigint NOT NULL,
    button         bigint NOT NULL,
    camera         bigint NOT NULL,
    closed         bigint NOT NULL,
    resolved       bigint NOT NULL,
    escalations    bigint NOT NULL,
    reassignments  bigint NOT NULL,
    repeat_presses bigint NOT NULL,
    settled        integer[] NOT NULL, -- closed, per settled level (0 = none): dense, 1-based
    outcomes       integer[] NOT NULL, -- closed, per outcome: dense, 1-based
    ack_pairs      integer[] NOT NULL, -- acknowledged, per archive_bucket(ms to acknowledge)
    close_pairs    integer[] NOT NULL  -- closed, per archive_bucket(ms to close)
);
INSERT INTO incident_rollup_pairs
SELECT day, community_id, requests, button, camera, closed, resolved, escalations,
       reassignments, repeat_presses, settled, outcomes, archive_pairs(ack_hist),
       archive_pairs(close_hist)
FROM incident_rollup
ORDER BY community_id, day;
DROP TABLE incident_rollup;
ALTER TABLE incident_rollup_pairs RENAME TO incident_rollup;
ALTER TABLE incident_rollup ADD PRIMARY KEY (day, community_id);
CREATE INDEX incident_rollup_community ON incident_rollup (community_id, day);

-- Migration 5's rebuild (a registry change that moves grids calls it), writing pairs.
CREATE OR REPLACE FUNCTION archive_rollup_build(communities text[]) RETURNS void
    LANGUAGE sql
    AS $$
    DELETE FROM incident_rollup WHERE communities IS NULL OR community_id = ANY(communities);
    DELETE FROM incident_rollup_kinds
        WHERE communities IS NULL OR community_id = ANY(communities);
    INSERT INTO incident_rollup
    SELECT day, community_id, count(*), count(*) FILTER (WHERE source = 1),
           count(*) FILTER (WHERE source = 2), count(*) FILTER (WHERE state = 4),
           count(*) FILTER (WHERE state = 4 AND outcome IN (1, 2)),
           sum(escalations), sum(reassignments), sum(repeat_presses),
           archive_hist(array_agg(greatest(coalesce(settled_level, 0), 0)::integer)
                        FILTER (WHERE state = 4)),
           archive_hist(array_agg(greatest(outcome, 0)::integer) FILTER (WHERE state = 4)),
           archive_hist_pairs(array_agg(archive_bucket(ack_ms))
                              FILTER (WHERE ack_ms IS NOT NULL)),
           archive_hist_pairs(array_agg(archive_bucket(close_ms))
                              FILTER (WHERE close_ms IS NOT NULL))
    FROM (SELECT coalesce(a.parent_id, '') AS community_id,
                 floor(archive_ms(i.opened_at)::numeric / 86400000)::integer AS day,
                 i.source, i.state, i.outcome, i.settled_level, i.escalations,
                 i.reassignments, i.repeat_presses,
                 archive_ms(i.acknowledged_at) - archive_ms(i.opened_at) AS ack_ms,
                 archive_ms(i.closed_at) - archive_ms(i.opened_at) AS close_ms
          FROM incidents i
          LEFT JOIN areas a ON a.area_id = i.grid_id AND a.level = 'grid') AS f
    WHERE communities IS NULL OR community_id = ANY(communities)
    GROUP BY day, community_id;
    INSERT INTO incident_rollup_kinds
    SELECT day, community_id, kind, count(*)
    FROM (SELECT coalesce(a.parent_id, '') AS community_id,
                 floor(archive_ms(i.opened_at)::numeric / 86400000)::integer AS day, i.kind
          FROM incidents i
          LEFT JOIN areas a ON a.area_id = i.grid_id AND a.level = 'grid') AS f
    WHERE communities IS NULL OR community_id = ANY(communities)
    GROUP BY day, community_id, kind;
    $$;
