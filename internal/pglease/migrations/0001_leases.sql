-- Schema 1 of the leases (internal/pglease): one row per lease name,
-- kept for ever once created so that its token only grows. A lease is
-- held while expires_at is in the future by the database's clock
-- (clock_timestamp()); no node's clock counts. Taking a lease over adds
-- one to token: the fencing token a holder's writes are checked against
-- (pglease.Check), under this row's lock.

CREATE TABLE qpc_leases (
	name text PRIMARY KEY,
	holder text NOT NULL,
	token bigint NOT NULL CHECK (token > 0),
	expires_at timestamptz NOT NULL
);
