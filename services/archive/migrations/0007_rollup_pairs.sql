-- The rollup's arrays stored sparse and as bytes: (index, count) pairs in a bytea instead of
-- one int4 array element per histogram bucket.
--
-- A community's day holds ~20 incidents, so its dense histograms (up to ~170 buckets, one
-- int4 each) were ~90 % zeros, and a county's month report spent its time sending, decoding
-- and adding 3,900 rows of ~1.4 KB (PostgreSQL itself found them in ~4 ms): an int4[] is sent
-- element by element. Pairs in a bytea are sent as one block, and a report adds a day's rows
-- up in PostgreSQL (sums, and `string_agg` of the pairs): 30 rows for a county's month
-- (docs/performance.md, "Archive reports: sparse histograms").
--
-- Format of `settled`, `outcomes`, `ack_pairs`, `close_pairs`: consecutive pairs of big-endian
-- int4 (`int4send`): index (settled level, outcome, or rollup::bucket), count. A value is the
-- sum of its pairs: an index may appear more than once and a count may be negative. The sink
-- appends each batch's delta (`||`) instead of merging, so a row's pairs grow with the changes
-- of its own incidents (about one pair per incident and figure), never with time;
-- `archive_rollup_build` writes one pair per index.
--
-- The table is rebuilt (not updated in place, which would leave the old rows' space behind),
-- in (community, day) order: the order county and town reports read it in. On the
-- 10,000,000-incident benchmark archive (474,500 rollup rows) this took the time given in
-- README, "Upgrading a large archive"; the sink waits for it at start-up.

-- A dense array (element i + 1 counts index i) as pairs, zero counts left out.
CREATE FUNCTION archive_pairs(dense integer[]) RETURNS bytea
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT coalesce(string_agg(int4send(i::integer - 1) || int4send(n), ''::bytea ORDER BY i),
                    ''::bytea)
    FROM unnest(dense) WITH ORDINALITY AS u(n, i)
    WHERE n <> 0
    $$;

-- How often each index occurs in `indexes`, as pairs (NULL or empty: no pairs).
CREATE FUNCTION archive_hist_pairs(indexes integer[]) RETURNS bytea
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT coalesce(string_agg(int4send(x) || int4send(n), ''::bytea ORDER BY x), ''::bytea)
    FROM (SELECT x, count(*)::integer AS n FROM unnest(indexes) AS x GROUP BY x) AS c
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
    settled_pairs  bytea NOT NULL, -- closed, per settled level (0 = none)
    outcome_pairs  bytea NOT NULL, -- closed, per outcome
    ack_pairs      bytea NOT NULL, -- acknowledged, per archive_bucket(ms to acknowledge)
    close_pairs    bytea NOT NULL  -- closed, per archive_bucket(ms to close)
);
INSERT INTO incident_rollup_pairs
SELECT day, community_id, requests, button, camera, closed, resolved, escalations,
       reassignments, repeat_presses, archive_pairs(settled), archive_pairs(outcomes),
       archive_pairs(ack_hist), archive_pairs(close_hist)
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
           archive_hist_pairs(array_agg(greatest(coalesce(settled_level, 0), 0)::integer)
                              FILTER (WHERE state = 4)),
           archive_hist_pairs(array_agg(greatest(outcome, 0)::integer)
                              FILTER (WHERE state = 4)),
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
