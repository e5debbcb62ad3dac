-- The archive: incidents (latest state), their full event trail, their assignments, and the
-- Kafka position the rows correspond to (written in the same transaction as the rows).

CREATE TABLE incidents (
    incident_id     text PRIMARY KEY,
    grid_id         text NOT NULL,
    state           smallint NOT NULL,
    source          smallint NOT NULL,
    priority        smallint NOT NULL,
    kind            text NOT NULL,
    household_id    text NOT NULL,
    device_id       text NOT NULL,
    camera_id       text NOT NULL,
    reported_at     timestamptz,
    opened_at       timestamptz NOT NULL,
    acknowledged_at timestamptz,
    closed_at       timestamptz,
    resolution      smallint NOT NULL,
    closed_by       text NOT NULL,
    settled_level   smallint,
    revision        bigint NOT NULL,
    escalations     integer NOT NULL,
    reassignments   integer NOT NULL,
    repeat_presses  integer NOT NULL,
    snapshot        bytea NOT NULL,
    pseudonymised_at timestamptz
);
-- History lists and reports: a period, newest first, optionally of some grids.
CREATE INDEX incidents_opened ON incidents (opened_at DESC, incident_id DESC);
CREATE INDEX incidents_grid_opened ON incidents (grid_id, opened_at DESC, incident_id DESC);

CREATE TABLE incident_events (
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    event_id        text NOT NULL,
    incident_id     text NOT NULL,
    grid_id         text NOT NULL,
    revision        bigint NOT NULL,
    change          text NOT NULL,
    occurred_at     timestamptz,
    cause_id        text NOT NULL,
    actor           text NOT NULL,
    record          bytea NOT NULL,
    -- A record archived twice would violate this: the last line of defence of exactly-once.
    PRIMARY KEY (kafka_partition, kafka_offset)
);
CREATE INDEX incident_events_trail ON incident_events (incident_id, revision, kafka_offset);

CREATE TABLE assignments (
    incident_id     text NOT NULL,
    track           smallint NOT NULL,
    level           smallint NOT NULL,
    attempt         integer NOT NULL,
    responder_id    text NOT NULL,
    responder_role  smallint NOT NULL,
    assigned_at     timestamptz,
    acknowledged_at timestamptz,
    acknowledged_by text NOT NULL,
    PRIMARY KEY (incident_id, track, level, attempt)
);

-- Where the sink is in each partition: the next offset to archive.
CREATE TABLE kafka_offsets (
    topic           text NOT NULL,
    kafka_partition integer NOT NULL,
    next_offset     bigint NOT NULL,
    PRIMARY KEY (topic, kafka_partition)
);
