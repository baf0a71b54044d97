-- Schema 1 of the account store on PostgreSQL (server/accounts/pgaccounts).
-- Tables of their own beside the mailbox store's, sharing nothing with
-- them: no key or value here has anything in common with mailbox data
-- (docs/storage.md). Times are Unix seconds (coarse: the service rounds
-- them to the hour); IDs raw bytes. No username is stored: cred_id is
-- SHA-256("qpc/1 account\0" || username); session tokens only as their
-- SHA-256.
--
-- Every operation that changes an account takes its accounts row's lock
-- first (SELECT ... FOR UPDATE): that lock serialises the operations of
-- one account across every node (the device limit, the quota, the
-- KeyPackage pool, deletion). Lock order: account, sessions, device.

CREATE TABLE accounts (
	cred_id bytea PRIMARY KEY CHECK (length(cred_id) = 32),
	account_ref bytea NOT NULL UNIQUE CHECK (length(account_ref) = 16),
	created bigint NOT NULL,
	record bytea NOT NULL CHECK (length(record) = 192) -- OPAQUE RegistrationRecord
);

-- An account's devices; deleted with it.
CREATE TABLE account_devices (
	account_ref bytea NOT NULL REFERENCES accounts (account_ref) ON DELETE CASCADE,
	device_id bytea NOT NULL CHECK (length(device_id) = 16),
	name bytea NOT NULL CHECK (length(name) <= 255),
	created bigint NOT NULL,
	last_used bigint NOT NULL,
	PRIMARY KEY (account_ref, device_id)
);

-- Sessions, one per device, under SHA-256(token); deleted with their
-- device.
CREATE TABLE account_sessions (
	token_hash bytea PRIMARY KEY CHECK (length(token_hash) = 32),
	account_ref bytea NOT NULL,
	device_id bytea NOT NULL,
	expiry bigint NOT NULL, -- the session fails from this second on
	last_used bigint NOT NULL,
	FOREIGN KEY (account_ref, device_id) REFERENCES account_devices ON DELETE CASCADE
);
CREATE INDEX account_sessions_device ON account_sessions (account_ref, device_id);
CREATE INDEX account_sessions_expiry ON account_sessions (expiry);

-- Token quota counts per epoch; epochs before the previous one are
-- deleted by the next take.
CREATE TABLE account_quota (
	account_ref bytea NOT NULL REFERENCES accounts (account_ref) ON DELETE CASCADE,
	epoch bigint NOT NULL CHECK (epoch >= 0 AND epoch <= 4294967295),
	used bigint NOT NULL CHECK (used >= 0),
	PRIMARY KEY (account_ref, epoch)
);

-- KeyPackage pools, first in first out: seq counts up within an account.
CREATE TABLE account_key_packages (
	account_ref bytea NOT NULL REFERENCES accounts (account_ref) ON DELETE CASCADE,
	seq bigint NOT NULL CHECK (seq > 0),
	key_package bytea NOT NULL,
	PRIMARY KEY (account_ref, seq)
);
