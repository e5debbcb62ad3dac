-- The administrative levels: city → county → town → community → grid, with names.
CREATE TABLE areas (
    area_id   text PRIMARY KEY,
    -- Empty for the city.
    parent_id text NOT NULL,
    level     text NOT NULL CHECK (level IN ('city', 'county', 'town', 'community', 'grid')),
    name      text NOT NULL
);
CREATE INDEX areas_parent ON areas (parent_id);
