-- Merging a rollup row's pairs (migration 7) back to one pair per index.
--
-- The sink appends each batch's delta pairs to the row's. For the rows of a busy day — a flood
-- day, ~600 incidents in a community — that would grow to thousands of pairs, rewritten whole
-- by every later batch that touches the row. Past 1 KB (128 pairs) the sink merges the row's
-- pairs with this function as it appends, so a value stays below ~1 KB plus one merged
-- histogram (at most ~170 buckets): a row's size is bounded whatever the day's volume.

-- Pairs (several values one after another; indexes may repeat, counts may be negative) as
-- one pair per index, ascending, zero sums left out: what rollup::pair_bytes writes for
-- their sum.
CREATE FUNCTION archive_pairs_merge(p bytea) RETURNS bytea
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$
    SELECT coalesce(string_agg(int4send(b) || int4send(n), ''::bytea ORDER BY b), ''::bytea)
    FROM (SELECT b, sum(n)::integer AS n
          -- (<< and | bind equally and from the left in SQL: every shift in parentheses.)
          FROM (SELECT (get_byte(p, j) << 24) | (get_byte(p, j + 1) << 16)
                       | (get_byte(p, j + 2) << 8) | get_byte(p, j + 3) AS b,
                       (get_byte(p, j + 4) << 24) | (get_byte(p, j + 5) << 16)
                       | (get_byte(p, j + 6) << 8) | get_byte(p, j + 7) AS n
                FROM generate_series(0, length(p) - 8, 8) AS j) AS pairs
          GROUP BY b
          HAVING sum(n) <> 0) AS merged
    $$;
