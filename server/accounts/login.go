package accounts

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/bytemare/opaque"
	"github.com/quicprochat/qpc/account"
)

// LoginState is the server's half of one login between LoginStart and
// LoginFinish. The request handler keeps it for the duration of the
// stream; it is good for one LoginFinish within Options.LoginTimeout.
type LoginState struct {
	server    *opaque.Server // this login's own server (one per login)
	clientMAC []byte         // expected KE3 (RFC 9807 §6.4.4)
	cred      CredID
	src       Source    // where the login came from, for the limiter
	started   time.Time // when LoginStart admitted it
	account   AccountRef
	found     int // 1 if the username is registered, else 0
	deadline  time.Time
	used      atomic.Bool
}

// A registered and an unregistered username take the same path, with the
// same work and a KE2 of the same size (RFC 9807 §10.9): a fake record is
// made for every login (GetFakeRecord with this username's credential
// identifier, §6.3.2.2), exactly one database read is made, the stored
// record (if any) replaces the fake one by a constant-time copy of equal
// length, and that one byte string is decoded and answered. The OPRF key
// comes from oprf_seed and the credential identifier in both cases, so
// repeated probes of one unknown username see a stable OPRF like a real
// one. LoginFinish then fails for an unknown username exactly as for a
// wrong password.
//
// LoginStart is LoginStartFrom the zero Source (an in-process caller).
func (s *Service) LoginStart(ctx context.Context, username string, ke1 []byte) ([]byte, *LoginState, error) {
	return s.LoginStartFrom(ctx, Source{}, username, ke1)
}

// LoginStartFrom answers a KE1 from src (RFC 9807 §6.2.2 GenerateKE2)
// and returns KE2 and the state LoginFinish needs. The rate limits (see
// Options) are checked first, by credential identifier and source, the
// same for every username.
//
// Errors: ErrInvalidUsername, ErrRateLimited, ErrMalformed, ErrStorage,
// ErrClosed, or the context's error.
func (s *Service) LoginStartFrom(ctx context.Context, src Source, username string, ke1 []byte) ([]byte, *LoginState, error) {
	if err := s.check(ctx); err != nil {
		return nil, nil, err
	}
	u, err := account.NormalizeUsername(username)
	if err != nil {
		return nil, nil, fmt.Errorf("accounts: login: %w", err)
	}
	cred := credentialID(u)
	now := s.opts.Now()
	if !s.limits.startLogin(cred, src, now) {
		return nil, nil, fmt.Errorf("accounts: login: %w", ErrRateLimited)
	}
	srv, err := s.newServer()
	if err != nil {
		return nil, nil, fmt.Errorf("accounts: login: %w: opaque server: %w", ErrStorage, err)
	}
	msg, err := srv.Deserialize.KE1(ke1)
	if err != nil {
		return nil, nil, fmt.Errorf("accounts: login: %w: KE1: %w", ErrMalformed, err)
	}

	fake, err := s.conf.GetFakeRecord(cred[:])
	if err != nil {
		return nil, nil, fmt.Errorf("accounts: login: %w: fake record: %w", ErrStorage, err)
	}
	fakeBytes := fake.Serialize()

	var (
		stored [account.RegistrationRecordSize]byte
		acct   AccountRef
		found  int
	)
	if err := s.check(ctx); err != nil {
		return nil, nil, err
	}
	switch a, err := s.store.Account(ctx, cred); {
	case err == nil:
		stored, acct, found = a.Record, a.Ref, 1
	case !errors.Is(err, ErrNotFound):
		return nil, nil, fmt.Errorf("accounts: login: %w", err)
	}
	if len(fakeBytes) != len(stored) {
		return nil, nil, fmt.Errorf("accounts: login: %w: fake record of %d bytes", ErrStorage, len(fakeBytes))
	}
	// The record to answer with: the stored one if found, else the fake,
	// chosen without a branch on found.
	chosen := fakeBytes
	subtle.ConstantTimeCopy(found, chosen, stored[:])
	rr, err := srv.Deserialize.RegistrationRecord(chosen)
	if err != nil {
		return nil, nil, fmt.Errorf("accounts: login: %w: stored registration record: %w", ErrCorrupt, err)
	}
	rec := &opaque.ClientRecord{
		RegistrationRecord:   rr,
		CredentialIdentifier: cred[:],
		// client_identity = username, as the client used it (RFC 9807 §10.3).
		ClientIdentity: []byte(u),
	}
	ke2, out, err := srv.GenerateKE2(msg, rec)
	if err != nil {
		return nil, nil, fmt.Errorf("accounts: login: %w: KE2: %w", ErrMalformed, err)
	}
	st := &LoginState{
		server:    srv,
		clientMAC: out.ClientMAC,
		cred:      cred,
		src:       src,
		started:   now,
		account:   acct,
		found:     found,
		deadline:  now.Add(s.opts.LoginTimeout),
	}
	return ke2.Serialize(), st, nil
}

// LoginFinish verifies KE3 (RFC 9807 §6.2.4 ServerFinish) and, if it
// authenticates a registered account, issues a session for device. A
// login from a device the account already has replaces that device's
// session (and renames it to deviceName); a new device is added, up to
// Options.MaxDevices.
//
// Errors: ErrAuth (wrong password, unknown username, state expired or
// already used: indistinguishable on purpose), ErrMalformed,
// ErrTooManyDevices, ErrStorage, ErrClosed, or the context's error.
func (s *Service) LoginFinish(ctx context.Context, st *LoginState, ke3 []byte, device account.DeviceID, deviceName string) (Session, error) {
	if err := s.check(ctx); err != nil {
		return Session{}, err
	}
	if err := checkDevice(device, deviceName); err != nil {
		return Session{}, fmt.Errorf("accounts: login: %w", err)
	}
	if st == nil || st.used.Swap(true) {
		return Session{}, fmt.Errorf("accounts: login: %w", ErrAuth)
	}
	now := s.opts.Now()
	msg, err := st.server.Deserialize.KE3(ke3)
	if err != nil {
		return Session{}, fmt.Errorf("accounts: login: %w: KE3: %w", ErrMalformed, err)
	}
	// ServerFinish compares MACs in constant time; the result is combined
	// with found without a branch, so an unknown username fails on the
	// same instructions as a wrong password.
	macOK := 0
	if st.server.LoginFinish(msg, st.clientMAC) == nil {
		macOK = 1
	}
	fresh := 0
	if now.Before(st.deadline) {
		fresh = 1
	}
	if macOK&st.found&fresh != 1 {
		return Session{}, fmt.Errorf("accounts: login: %w", ErrAuth)
	}
	s.limits.succeeded(st.cred, st.src, st.started)
	sess, ns := s.newSession(st.account, device, deviceName, now)
	if err := s.check(ctx); err != nil {
		return Session{}, err
	}
	// The account may have been deleted since LoginStart: the store
	// checks it is still st.account.
	if err := s.store.Login(ctx, st.cred, st.account, ns, s.opts.MaxDevices); err != nil {
		return Session{}, fmt.Errorf("accounts: login: %w", err)
	}
	return sess, nil
}

// checkDevice rejects a zero device ID (an uninitialised client) and an
// invalid name.
func checkDevice(device account.DeviceID, name string) error {
	if device == (account.DeviceID{}) || !account.ValidDeviceName(name) {
		return ErrMalformed
	}
	return nil
}
