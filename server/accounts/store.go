package accounts

import (
	"context"
	"time"

	"github.com/quicprochat/qpc/account"
)

// CredID is a credential identifier, SHA-256("qpc/1 account\0" ||
// username) (credentialID): the key an account is registered under. The
// store never sees a username.
type CredID [credIDSize]byte

// TokenHash is SHA-256 of a session token: the store keeps sessions under
// it and never sees a token.
type TokenHash [tokenHashSize]byte

// StoredAccount is what the store keeps of an account besides its
// devices, sessions, quota counts and KeyPackages.
type StoredAccount struct {
	Ref     AccountRef
	Created time.Time // coarse
	// Record is the OPAQUE RegistrationRecord (RFC 9807 §5.1).
	Record [account.RegistrationRecordSize]byte
}

// StoredSession is a session as the store keeps it, under its TokenHash.
type StoredSession struct {
	Account  AccountRef
	Device   account.DeviceID
	Expiry   time.Time // the session fails from this second on
	LastUsed time.Time // coarse
}

// NewSession is a session to issue to a device, with the device's entry.
type NewSession struct {
	Hash       TokenHash
	Device     account.DeviceID
	DeviceName string
	// Now, coarse, becomes the session's and the device's LastUsed, and
	// the device's Created if the account does not have it yet.
	Now    time.Time
	Expiry time.Time
}

// Store is everything the account service persists: the seam behind
// which a database other than the embedded bbolt file (OpenBolt) can
// keep accounts. The Service does the OPAQUE work, validation, rate
// limiting, randomness and rounding of times; a Store keeps records and
// gives each operation its atomicity: every method is one transaction,
// all or nothing, and a mutating method returns only once its change is
// durable (committed and synced). Implementations must be safe for
// concurrent use; one that several server nodes share must keep each
// method atomic across them (a username registered once, a quota never
// overdrawn, a KeyPackage taken once, whichever nodes ask).
//
// Errors are the package's sentinels (ErrTaken, ErrAuth, ErrNotFound,
// ErrTooManyDevices, ErrQuota, ErrPoolFull, ErrClosed after Close), or
// ErrStorage (ErrCorrupt for a record that does not decode) wrapping the
// cause; the Service adds the operation. The conformance suite in
// server/accounts/accountstest checks these semantics; a second
// implementation must pass it.
//
// Times are kept to the second (the Service passes coarse ones).
type Store interface {
	// Account returns the account registered under cred; ErrNotFound if
	// none. Login reads it exactly once per LoginStart, registered or
	// not.
	Account(ctx context.Context, cred CredID) (StoredAccount, error)
	// Credential returns the credential identifier the account ref is
	// registered under; ErrNotFound if there is no such account.
	Credential(ctx context.Context, ref AccountRef) (CredID, error)
	// Register creates the account a under cred with its first device
	// and session, all or nothing: ErrTaken if cred is registered, an
	// ErrStorage error if a.Ref is taken (a broken random source).
	Register(ctx context.Context, cred CredID, a StoredAccount, s NewSession) error
	// Login issues session s to a device of the account registered under
	// cred, provided that account is still ref (ErrAuth if it was deleted
	// or registered anew since the login started). A device the account
	// has keeps its Created, takes s.DeviceName, and loses every session
	// it had (one session per device); a new device is added if the
	// account has fewer than maxDevices (else ErrTooManyDevices, nothing
	// written).
	Login(ctx context.Context, cred CredID, ref AccountRef, s NewSession, maxDevices int) error
	// Session returns the session stored under h if it is valid at now
	// (now before its Expiry); ErrAuth for an unknown, revoked or expired
	// one.
	Session(ctx context.Context, h TokenHash, now time.Time) (StoredSession, error)
	// TouchSession sets the LastUsed of the session under h and of its
	// device to lastUsed; ErrAuth if the session is not valid at now
	// (revoked meanwhile).
	TouchSession(ctx context.Context, h TokenHash, now, lastUsed time.Time) error
	// Devices lists the account's devices ordered by device ID (bytewise);
	// none for an unknown account.
	Devices(ctx context.Context, ref AccountRef) ([]Device, error)
	// RevokeDevice deletes the device and its session; ErrNotFound if the
	// account has no such device.
	RevokeDevice(ctx context.Context, ref AccountRef, device account.DeviceID) error
	// ChangePassword, for the session under h valid at now (else
	// ErrAuth), replaces its account's registration record and revokes
	// every other session of the account, in one transaction;
	// ErrNotFound if the account is gone.
	ChangePassword(ctx context.Context, h TokenHash, now time.Time, record [account.RegistrationRecordSize]byte) error
	// DeleteAccount, for the session under h valid at now (else ErrAuth),
	// deletes its account and everything of it: the registration (the
	// credential becomes free), devices, sessions, quota counts and
	// KeyPackages, in one transaction.
	DeleteAccount(ctx context.Context, h TokenHash, now time.Time) error
	// PurgeSessions deletes every session expired at now and returns how
	// many.
	PurgeSessions(ctx context.Context, now time.Time) (int, error)
	// ConsumeQuota adds n to the account's count for epoch if the count
	// stays within limit (else ErrQuota, nothing taken), and deletes its
	// counts of epochs before epoch-1, in one transaction; ErrNotFound for
	// an unknown account. Concurrent calls never take more than limit
	// together.
	ConsumeQuota(ctx context.Context, ref AccountRef, epoch uint32, n, limit int) error
	// QuotaUsed returns the account's count for epoch (0 if none).
	QuotaUsed(ctx context.Context, ref AccountRef, epoch uint32) (int, error)
	// AddKeyPackages appends kps, in order, to the account's KeyPackage
	// pool unless the pool would hold more than limit (ErrPoolFull,
	// nothing added) and returns how many the pool holds (also with
	// ErrPoolFull); with no kps it only counts. ErrNotFound for an
	// unknown account. The store keeps each KeyPackage as given (the
	// Service checks sizes).
	AddKeyPackages(ctx context.Context, ref AccountRef, kps [][]byte, limit int) (int, error)
	// TakeKeyPackage removes and returns the oldest KeyPackage of the
	// account registered under cred; nil, nil when there is none or no
	// such account. Two takes never return the same KeyPackage.
	TakeKeyPackage(ctx context.Context, cred CredID) ([]byte, error)
	// Close releases the store; idempotent. Later calls fail with
	// ErrClosed.
	Close() error
}
