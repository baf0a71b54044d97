-- The key-transparency directory's queue of publishes, shared by the
-- nodes of one deployment (kt.SharedQueue, ADR 0037). A row is queued
-- (state 0) by any node, taken by the sequencer into an epoch (1) and
-- settled with its outcome (2); the publishing node reads and deletes
-- it. One row of a label is queued or taken at a time.
CREATE TABLE kt_pending (
	id             bigserial PRIMARY KEY,
	label          bytea NOT NULL,
	value          bytea NOT NULL,
	version        bigint NOT NULL,
	vrf_index      bytea NOT NULL,
	vrf_proof      bytea NOT NULL,
	first          boolean NOT NULL DEFAULT false, -- PublishFirst: refused if the label has a version
	state          smallint NOT NULL DEFAULT 0,
	epoch          bigint,
	result_version bigint,
	result_err     text,
	settled_at     timestamptz
);
CREATE UNIQUE INDEX kt_pending_label ON kt_pending (label) WHERE state < 2;
CREATE INDEX kt_pending_state ON kt_pending (state, id);
