-- The per-day, per-community rollup reports read for whole days (src/rollup.rs says why and
-- how; README, "Report definitions", what each figure is). The sink keeps it in step in the
-- same transaction as the rows; this migration builds it for the incidents already archived.
--
-- One row per UTC day of opened_at and community (the grid's parent in `areas`; '' for a grid
-- the registry does not place). The arrays are dense, 1-based: element i + 1 counts index i.
CREATE TABLE incident_rollup (
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
    settled        integer[] NOT NULL, -- closed, per settled level (0 = none)
    outcomes       integer[] NOT NULL, -- closed, per outcome
    ack_hist       integer[] NOT NULL, -- acknowledged, per archive_bucket(ms to acknowledge)
    close_hist     integer[] NOT NULL, -- closed, per archive_bucket(ms to close)
    PRIMARY KEY (day, community_id)
);

CREATE TABLE incident_rollup_kinds (
    day          integer NOT NULL,
    community_id text NOT NULL,
    kind         text NOT NULL,
    requests     bigint NOT NULL,
    PRIMARY KEY (day, community_id, kind)
);

-- Milliseconds since the epoch, truncated as the archive's Rust code reads a timestamp.
CREATE FUNCTION archive_ms(t timestamptz) RETURNS bigint
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT floor(extract(epoch FROM t) * 1000)::bigint $$;

-- rollup::bucket in SQL: exact below 16 ms, then 8 buckets per power of two.
CREATE FUNCTION archive_bucket(ms bigint) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$
    SELECT CASE WHEN v < 16 THEN v::integer
                ELSE (16 + (e - 4) * 8 + ((v >> (e - 3)) & 7))::integer END
    FROM (SELECT v, 64 - position('1' IN v::bit(64)::text) AS e
          FROM (SELECT least(greatest(ms, 0), 2199023255551) AS v) AS clamped) AS parts
    $$;

-- Element-wise a + b (the shorter padded with zeros).
CREATE FUNCTION archive_add(a integer[], b integer[]) RETURNS integer[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT coalesce(array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i), '{}')
    FROM unnest(a, b) WITH ORDINALITY AS u(x, y, i)
    $$;

-- A dense histogram of the indexes in `indexes` (NULL or empty: '{}').
CREATE FUNCTION archive_hist(indexes integer[]) RETURNS integer[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT coalesce(array_agg(coalesce(c.n, 0) ORDER BY g.i), '{}')
    FROM generate_series(0, (SELECT max(x) FROM unnest(indexes) AS x)) AS g(i)
    LEFT JOIN (SELECT x, count(*)::integer AS n FROM unnest(indexes) AS x GROUP BY x) AS c
        ON c.x = g.i
    $$;

-- (Re)builds the rollup rows of `communities` (NULL: all) from `incidents` and `areas`, as
-- the sink would have written them. Resolved = closed with outcome 1 or 2
-- (rows::resolving_outcomes); tests/rollup.rs checks this against the sink's figures.
CREATE FUNCTION archive_rollup_build(communities text[]) RETURNS void
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
           archive_hist(array_agg(archive_bucket(ack_ms)) FILTER (WHERE ack_ms IS NOT NULL)),
           archive_hist(array_agg(archive_bucket(close_ms)) FILTER (WHERE close_ms IS NOT NULL))
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

SELECT archive_rollup_build(NULL);
