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

-- qpc_put is a send (store.Store.Put) in one call, so that a send is one
-- round trip and the mailbox's row lock is held for the function and the
-- commit only. Run in a transaction of its own (autocommit): status 0 is
-- stored (seq is its seq); the others wrote nothing: 1 no such send ID,
-- 2 duplicate (seq is the original's), 3 count quota, 4 bytes quota,
-- 5 the spend key is spent. Each statement of a plpgsql function takes a
-- new snapshot under read committed, so the arrival lookup after the
-- lock sees what the previous holder of the lock committed.
CREATE FUNCTION qpc_put(p_send bytea, p_id bytea, p_env bytea, p_received bigint,
		p_max_count bigint, p_max_bytes bigint, p_spend bytea, p_spend_expires bigint,
		OUT status integer, OUT rid bytea, OUT seq bigint)
LANGUAGE plpgsql AS $$
DECLARE
	m mailboxes%ROWTYPE;
BEGIN
	SELECT * INTO m FROM mailboxes WHERE send_id = p_send FOR UPDATE;
	IF NOT FOUND THEN
		status := 1;
		RETURN;
	END IF;
	rid := m.receive_id;
	SELECT a.seq INTO seq FROM arrivals a WHERE a.receive_id = m.receive_id AND a.message_id = p_id;
	IF FOUND THEN
		status := 2;
		RETURN;
	END IF;
	IF p_max_count > 0 AND m.msg_count + 1 > p_max_count THEN
		status := 3;
		RETURN;
	END IF;
	IF p_max_bytes > 0 AND m.msg_bytes + length(p_env) > p_max_bytes THEN
		status := 4;
		RETURN;
	END IF;
	IF p_spend IS NOT NULL THEN
		INSERT INTO spent (spend_key, expires) VALUES (p_spend, p_spend_expires) ON CONFLICT DO NOTHING;
		IF NOT FOUND THEN
			status := 5;
			RETURN;
		END IF;
	END IF;
	UPDATE mailboxes SET next_seq = m.next_seq + 1, msg_count = msg_count + 1, msg_bytes = msg_bytes + length(p_env)
		WHERE receive_id = m.receive_id;
	INSERT INTO messages (receive_id, seq, message_id, received, envelope) VALUES (m.receive_id, m.next_seq, p_id, p_received, p_env);
	INSERT INTO arrivals (receive_id, message_id, seq, received) VALUES (m.receive_id, p_id, m.next_seq, p_received);
	seq := m.next_seq;
	status := 0;
END
$$;
