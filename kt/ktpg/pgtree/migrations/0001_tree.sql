-- Schema 1 of the key transparency directory's tree store on PostgreSQL
-- (kt/ktpg/pgtree): what kt.TreeStore keeps, opaque bytes the directory
-- encodes. Labels are bytea, not text: a label is any byte string.
-- bytea orders bytewise (memcmp, then length), the node order ScanNodes
-- promises.
--
-- kt_tree_head's one row counts the committed epochs; CommitEpoch locks
-- it (FOR UPDATE) and refuses an epoch other than its count, so that of
-- two writers the second's commit of the same epoch fails.

CREATE TABLE kt_tree_head (
	one boolean PRIMARY KEY DEFAULT true CHECK (one),
	epochs bigint NOT NULL CHECK (epochs >= 0)
);
INSERT INTO kt_tree_head (epochs) VALUES (0);

CREATE TABLE kt_tree_epochs (
	epoch bigint PRIMARY KEY CHECK (epoch >= 0),
	record bytea NOT NULL,
	update_list bytea -- NULL: none stored
);

CREATE TABLE kt_tree_versions (
	label bytea NOT NULL,
	version bigint NOT NULL CHECK (version BETWEEN 0 AND 4294967295),
	record bytea NOT NULL,
	PRIMARY KEY (label, version)
);

CREATE TABLE kt_tree_nodes (
	key bytea PRIMARY KEY,
	value bytea NOT NULL
);
