-- The KT epoch log (kt.LogDriver on PostgreSQL, ADR 0036): one head row,
-- locked by every Append, and the tlog-tiles resources it maintains.

-- ktlog_head is the log's state: size entries are integrated; range is
-- the compact range [0, size) of the Merkle tree (its hashes, 32 bytes
-- each, left to right); checkpoint is the newest signed checkpoint, of
-- checkpoint_size entries.
CREATE TABLE ktlog_head (
    id              smallint PRIMARY KEY CHECK (id = 1),
    size            bigint NOT NULL CHECK (size >= 0),
    range_hashes    bytea NOT NULL,
    checkpoint      bytea NOT NULL,
    checkpoint_size bigint NOT NULL CHECK (checkpoint_size >= 0)
);

-- ktlog_tiles holds the newest version of every hash tile (C2SP
-- tlog-tiles): width hashes of 32 bytes; 256 is a full tile. A partial
-- tile of a smaller width is a prefix of it.
CREATE TABLE ktlog_tiles (
    level bigint   NOT NULL CHECK (level >= 0),
    idx   bigint   NOT NULL CHECK (idx >= 0),
    width smallint NOT NULL CHECK (width BETWEEN 1 AND 256),
    data  bytea    NOT NULL CHECK (length(data) = 32 * width),
    PRIMARY KEY (level, idx)
);

-- ktlog_bundles holds the newest version of every entry bundle: width
-- entries, each a big-endian uint16 length and the entry.
CREATE TABLE ktlog_bundles (
    idx   bigint   PRIMARY KEY CHECK (idx >= 0),
    width smallint NOT NULL CHECK (width BETWEEN 1 AND 256),
    data  bytea    NOT NULL
);
