package accounts

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/bytemare/opaque"
	"github.com/quicprochat/qpc/account"
)

// Errors. Every error a method returns matches exactly one of these with
// errors.Is (ErrCorrupt also matches ErrStorage); the integrator maps them
// to wire error codes.
var (
	// ErrMalformed: a message that does not decode (an OPAQUE message the
	// library rejects, a zero device ID, an invalid device name).
	ErrMalformed = account.ErrMalformed
	// ErrInvalidUsername: a username outside the rules of package account.
	ErrInvalidUsername = account.ErrInvalidUsername
	// ErrTaken: registration of a username that is already registered.
	// This discloses that the username exists; registration cannot avoid
	// it (RFC 9807 §10.9), which is why RegisterStart is rate limited.
	ErrTaken = errors.New("accounts: username taken")
	// ErrAuth: a login that did not authenticate (wrong password, unknown
	// username, expired or reused login state), or a session token that is
	// unknown, revoked or expired. Deliberately one error for all of them.
	ErrAuth = errors.New("accounts: authentication failed")
	// ErrRateLimited: too many unproven logins of this username from this
	// source, or too many OPAQUE exchanges from this source or on the whole
	// server. Retry later.
	ErrRateLimited = errors.New("accounts: rate limited")
	// ErrQuota: the account's tokens for the epoch are used up.
	ErrQuota = errors.New("accounts: quota exhausted")
	// ErrNotFound: RevokeDevice of a device the account does not have, or
	// an operation on an account that no longer exists.
	ErrNotFound = errors.New("accounts: not found")
	// ErrTooManyDevices: a login from a new device when the account already
	// has Options.MaxDevices devices. Revoke one first.
	ErrTooManyDevices = errors.New("accounts: too many devices")
	// ErrPoolFull: an upload that would take the account's KeyPackage
	// pool past its limit. Nothing of the upload is stored.
	ErrPoolFull = errors.New("accounts: KeyPackage pool full")
	// ErrStorage: the database failed.
	ErrStorage = errors.New("accounts: storage failure")
	// ErrClosed: the Service is closed.
	ErrClosed = errors.New("accounts: closed")
)

// AccountRef identifies an account inside the server: 16 random bytes
// chosen at registration. It is not derived from the username and is never
// sent to clients.
type AccountRef [16]byte

// Session is a freshly issued session. Token goes to the client once (in
// account.SessionIssued) and is never stored.
type Session struct {
	Token   account.Token
	Expiry  time.Time
	Account AccountRef
	Device  account.DeviceID
}

// Issued returns the SessionIssued body for s.
func (s Session) Issued() account.SessionIssued {
	return account.SessionIssued{Token: s.Token, Expiry: uint64(s.Expiry.Unix())}
}

// Device is one device of an account. Times are coarse (to the hour).
type Device struct {
	ID       account.DeviceID
	Name     string
	Created  time.Time
	LastUsed time.Time
}

// Options configure a Service. Zero values take the defaults.
type Options struct {
	// SessionTTL is the lifetime of a session; default 30 days. A session
	// is not extended by use: the device logs in again.
	SessionTTL time.Duration
	// LoginTimeout bounds the time between LoginStart and LoginFinish;
	// default 2 minutes.
	LoginTimeout time.Duration
	// MaxFailures unproven logins of one username from one Source within
	// FailureWindow make further LoginStarts of that username from that
	// source fail with ErrRateLimited until the oldest leaves the window;
	// defaults 10 and 15 minutes. A login is unproven until its
	// LoginFinish proves the password; a proven login forgives its
	// source's count. Other sources are not affected.
	MaxFailures   int
	FailureWindow time.Duration
	// UserFailures unproven logins of one username within FailureWindow,
	// from all sources together, put the username under attack: each
	// source may then have only 2 unproven logins of it in the window.
	// Default 10 × MaxFailures.
	UserFailures int
	// GlobalRate and GlobalBurst shape the token bucket that every
	// LoginStart and ChangePasswordStart draws one token from; defaults
	// 50/s and 200.
	GlobalRate  float64
	GlobalBurst int
	// SourceRate and SourceBurst shape each Source's own bucket of
	// LoginStarts; defaults 2/s and 20.
	SourceRate  float64
	SourceBurst int
	// RegisterRate and RegisterBurst shape the token bucket of
	// RegisterStarts, separate from the logins' so that registrations
	// cannot starve logins; defaults 5/s and 20.
	RegisterRate  float64
	RegisterBurst int
	// RegisterSourceRate and RegisterSourceBurst shape each Source's own
	// bucket of RegisterStarts; defaults one per 10 s and 5.
	RegisterSourceRate  float64
	RegisterSourceBurst int
	// MaxDevices per account; default and maximum account.MaxDevices.
	MaxDevices int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Defaults.
const (
	DefaultSessionTTL    = 30 * 24 * time.Hour
	DefaultLoginTimeout  = 2 * time.Minute
	DefaultMaxFailures   = 10
	DefaultFailureWindow = 15 * time.Minute
	// DefaultGlobalRate: a LoginStart costs the server about 0.6 ms of
	// one core (BenchmarkLoginStart), so 50/s is about 3 % of a core.
	DefaultGlobalRate          = 50
	DefaultGlobalBurst         = 200
	DefaultSourceRate          = 2
	DefaultSourceBurst         = 20
	DefaultRegisterRate        = 5
	DefaultRegisterBurst       = 20
	DefaultRegisterSourceRate  = 0.1
	DefaultRegisterSourceBurst = 5
)

func (o *Options) setDefaults() {
	if o.SessionTTL <= 0 {
		o.SessionTTL = DefaultSessionTTL
	}
	if o.LoginTimeout <= 0 {
		o.LoginTimeout = DefaultLoginTimeout
	}
	if o.MaxFailures <= 0 {
		o.MaxFailures = DefaultMaxFailures
	}
	if o.FailureWindow <= 0 {
		o.FailureWindow = DefaultFailureWindow
	}
	if o.UserFailures <= 0 {
		o.UserFailures = 10 * o.MaxFailures
	}
	rate := func(r *float64, b *int, dr float64, db int) {
		if *r <= 0 {
			*r = dr
		}
		if *b <= 0 {
			*b = db
		}
	}
	rate(&o.GlobalRate, &o.GlobalBurst, DefaultGlobalRate, DefaultGlobalBurst)
	rate(&o.SourceRate, &o.SourceBurst, DefaultSourceRate, DefaultSourceBurst)
	rate(&o.RegisterRate, &o.RegisterBurst, DefaultRegisterRate, DefaultRegisterBurst)
	rate(&o.RegisterSourceRate, &o.RegisterSourceBurst, DefaultRegisterSourceRate, DefaultRegisterSourceBurst)
	if o.MaxDevices <= 0 || o.MaxDevices > account.MaxDevices {
		o.MaxDevices = account.MaxDevices
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Service is the server side of accounts. It is safe for concurrent use.
type Service struct {
	keys   *Keys
	conf   *opaque.Configuration
	store  Store
	opts   Options
	limits *limiter
	closed atomic.Bool
}

// Open opens (creating if needed) <dataDir>/accounts.db, mode 0600, and
// returns a Service using keys over it (OpenBolt, New). The caller closes
// it.
func Open(dataDir string, keys *Keys, opts Options) (*Service, error) {
	if keys == nil {
		return nil, errors.New("accounts: open: nil keys")
	}
	st, err := OpenBolt(dataDir)
	if err != nil {
		return nil, err
	}
	return New(st, keys, opts)
}

// New returns a Service using keys over st, which it owns from then on:
// Close closes it.
func New(st Store, keys *Keys, opts Options) (*Service, error) {
	if keys == nil || st == nil {
		return nil, errors.New("accounts: new: nil keys or store")
	}
	opts.setDefaults()
	return &Service{
		keys:   keys,
		conf:   account.Configuration(),
		store:  st,
		opts:   opts,
		limits: newLimiter(opts),
	}, nil
}

// Close closes the store. It is idempotent.
func (s *Service) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if err := s.store.Close(); err != nil {
		return fmt.Errorf("accounts: close: %w", err)
	}
	return nil
}

// Ping checks that the store answers, for /readyz: a store with a Ping
// method of its own (a database) is asked; the embedded one always
// answers.
func (s *Service) Ping(ctx context.Context) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if p, ok := s.store.(interface{ Ping(context.Context) error }); ok {
		return p.Ping(ctx)
	}
	return nil
}

// credentialID is the RFC 9807 credential_identifier of a (normalised)
// username: unique per client and stable (§5, §8), and the key of the
// account record, so the raw username is never stored.
func credentialID(username string) CredID {
	h := sha256.New()
	h.Write([]byte("qpc/1 account\x00"))
	h.Write([]byte(username))
	var id CredID
	h.Sum(id[:0])
	return id
}

func hashToken(t account.Token) TokenHash { return sha256.Sum256(t[:]) }

// newServer returns a fresh opaque.Server with its own copy of the key
// material: one per exchange, never shared (reusing one broke the next
// login on this machine, as the architecture brief records).
func (s *Service) newServer() (*opaque.Server, error) {
	srv, err := s.conf.Server()
	if err != nil {
		return nil, err
	}
	if err := srv.SetKeyMaterial(s.keys.serverKeyMaterial()); err != nil {
		return nil, err
	}
	return srv, nil
}

func (s *Service) check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return ErrClosed
	}
	return nil
}
