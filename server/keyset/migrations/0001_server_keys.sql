-- Schema 1 of the shared key record (server/keyset): the PUBLIC
-- fingerprint of each key of the server's key set, recorded by the first
-- node that starts on the database and compared by every node at start.
-- No secret and nothing derived from a secret that is not public: a dump
-- of the database must not give the server's identity (docs/adr/0039).
-- name is the key file's name (tls.key, tokens.key, opaque.key,
-- kt-note.key, kt-vrf.key, onion.key); fingerprint SHA-256 of the key's
-- public value (docs/scaling.md); recorded Unix seconds.

CREATE TABLE server_keys (
	name text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 64),
	fingerprint bytea NOT NULL CHECK (length(fingerprint) = 32),
	recorded bigint NOT NULL
);
