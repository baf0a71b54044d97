-- Schema 1 of the mailbox store on PostgreSQL (server/store/pgstore).
-- Times are Unix seconds, truncated to the store's time granularity
-- before they get here; IDs and keys are raw bytes. Nothing here names an
-- account or a sender (docs/storage.md).

-- One row per mailbox. next_seq, msg_count and msg_bytes are updated in
-- the transaction of every Put, Ack and purge that changes them, under
-- the row's lock: that lock serialises the writes to one mailbox across
-- every node, which is what makes quotas and idempotent retries exact.
CREATE TABLE mailboxes (
	receive_id bytea PRIMARY KEY CHECK (length(receive_id) = 32),
	send_id bytea NOT NULL UNIQUE CHECK (length(send_id) = 32),
	owner_key bytea NOT NULL CHECK (length(owner_key) = 32),
	created bigint NOT NULL,
	last_used bigint NOT NULL, -- 00:00 UTC of the day of the owner's last fetch
	next_seq bigint NOT NULL DEFAULT 1,
	msg_count bigint NOT NULL DEFAULT 0 CHECK (msg_count >= 0),
	msg_bytes bigint NOT NULL DEFAULT 0 CHECK (msg_bytes >= 0)
);
CREATE INDEX mailboxes_last_used ON mailboxes (last_used);

-- Stored envelopes, in seq order per mailbox.
CREATE TABLE messages (
	receive_id bytea NOT NULL REFERENCES mailboxes ON DELETE CASCADE,
	seq bigint NOT NULL,
	message_id bytea NOT NULL CHECK (length(message_id) = 16),
	received bigint NOT NULL,
	envelope bytea NOT NULL,
	PRIMARY KEY (receive_id, seq)
);

-- Every message accepted within the TTL, acknowledged or not: the
-- idempotency keys (a retry finds its seq here even after the ack) and
-- the expiry index.
CREATE TABLE arrivals (
	receive_id bytea NOT NULL REFERENCES mailboxes ON DELETE CASCADE,
	message_id bytea NOT NULL,
	seq bigint NOT NULL,
	received bigint NOT NULL,
	PRIMARY KEY (receive_id, message_id)
);
CREATE INDEX arrivals_received ON arrivals (received);

-- The spent set of one-time authorizations (anonymous delivery tokens),
-- written in the transaction of the write each pays for.
CREATE TABLE spent (
	spend_key bytea PRIMARY KEY CHECK (length(spend_key) = 32),
	expires bigint NOT NULL
);
CREATE INDEX spent_expires ON spent (expires);

-- Settings of the last Open (envelope_limit).
CREATE TABLE store_meta (
	name text PRIMARY KEY,
	value bigint NOT NULL
);
