package accounts

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/bytemare/opaque/message"
	"github.com/quicprochat/qpc/account"
)

// RegisterStart is RegisterStartFrom the zero Source (an in-process
// caller).
func (s *Service) RegisterStart(ctx context.Context, username string, request []byte) ([]byte, error) {
	return s.RegisterStartFrom(ctx, Source{}, username, request)
}

// RegisterStartFrom answers a RegistrationRequest from src (RFC 9807
// §5.2.2 CreateRegistrationResponse) for username and returns the
// serialized RegistrationResponse. Nothing is stored: RegisterFinish gets everything
// it needs from the caller.
//
// A registered username fails with ErrTaken. That tells the caller the
// username exists; registration cannot hide it (RFC 9807 §10.9), so every
// RegisterStart draws from src's registration bucket and from the global
// registration bucket (not the logins': a flood of registrations cannot
// starve logins).
//
// Errors: ErrInvalidUsername, ErrRateLimited, ErrMalformed, ErrTaken,
// ErrStorage, ErrClosed, or the context's error.
func (s *Service) RegisterStartFrom(ctx context.Context, src Source, username string, request []byte) ([]byte, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	u, err := account.NormalizeUsername(username)
	if err != nil {
		return nil, fmt.Errorf("accounts: register: %w", err)
	}
	if !s.limits.takeRegister(src, s.opts.Now()) {
		return nil, fmt.Errorf("accounts: register: %w", ErrRateLimited)
	}
	cred := credentialID(u)
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	switch _, err := s.store.Account(ctx, cred); {
	case err == nil:
		return nil, fmt.Errorf("accounts: register: %w", ErrTaken)
	case !errors.Is(err, ErrNotFound):
		return nil, fmt.Errorf("accounts: register: %w", err)
	}
	resp, err := s.registrationResponse(cred, request)
	if err != nil {
		return nil, fmt.Errorf("accounts: register: %w", err)
	}
	return resp, nil
}

// registrationResponse evaluates the OPRF on the client's blinded password
// with the key derived from oprf_seed and cred (RFC 9807 §5.2.2), on a
// server of its own.
func (s *Service) registrationResponse(cred CredID, request []byte) ([]byte, error) {
	srv, err := s.newServer()
	if err != nil {
		return nil, fmt.Errorf("%w: opaque server: %w", ErrStorage, err)
	}
	req, err := srv.Deserialize.RegistrationRequest(request)
	if err != nil {
		return nil, fmt.Errorf("%w: registration request: %w", ErrMalformed, err)
	}
	resp, err := srv.RegistrationResponse(req, cred[:], nil)
	if err != nil {
		return nil, fmt.Errorf("%w: registration response: %w", ErrMalformed, err)
	}
	return resp.Serialize(), nil
}

// parseRecord decodes and checks a RegistrationRecord (RFC 9807 §5.1)
// before it is stored: a valid client public key (§10.7) and a non-zero
// masking key; the library checks both.
func (s *Service) parseRecord(record []byte) ([account.RegistrationRecordSize]byte, error) {
	var out [account.RegistrationRecordSize]byte
	d, err := s.conf.Deserializer()
	if err != nil {
		return out, fmt.Errorf("%w: opaque deserializer: %w", ErrStorage, err)
	}
	var rr *message.RegistrationRecord
	if rr, err = d.RegistrationRecord(record); err != nil {
		return out, fmt.Errorf("%w: registration record: %w", ErrMalformed, err)
	}
	if ser := rr.Serialize(); len(ser) != len(out) {
		return out, fmt.Errorf("%w: registration record of %d bytes", ErrMalformed, len(ser))
	}
	copy(out[:], record)
	return out, nil
}

// RegisterFinish stores the client's RegistrationRecord (RFC 9807
// §5.2.3 output) under username, creates the account and its first
// device, and issues that device a session.
//
// The handler calls it only after RegisterStart succeeded for the same
// username on the same stream: the server cannot tell a record made from
// its RegistrationResponse from one made up, so it is RegisterStart that
// charges the rate limit for the whole registration.
//
// Errors: ErrInvalidUsername, ErrMalformed, ErrTaken (someone registered
// the username since RegisterStart), ErrStorage, ErrClosed, or the
// context's error.
func (s *Service) RegisterFinish(ctx context.Context, username string, record []byte, device account.DeviceID, deviceName string) (Session, error) {
	if err := s.check(ctx); err != nil {
		return Session{}, err
	}
	u, err := account.NormalizeUsername(username)
	if err != nil {
		return Session{}, fmt.Errorf("accounts: register: %w", err)
	}
	if err := checkDevice(device, deviceName); err != nil {
		return Session{}, fmt.Errorf("accounts: register: %w", err)
	}
	rec, err := s.parseRecord(record)
	if err != nil {
		return Session{}, fmt.Errorf("accounts: register: %w", err)
	}
	cred := credentialID(u)
	now := s.opts.Now()
	var id AccountRef
	rand.Read(id[:])
	sess, ns := s.newSession(id, device, deviceName, now)
	if err := s.check(ctx); err != nil {
		return Session{}, err
	}
	err = s.store.Register(ctx, cred, StoredAccount{Ref: id, Created: time.Unix(coarse(now), 0), Record: rec}, ns)
	if err != nil {
		return Session{}, fmt.Errorf("accounts: register: %w", err)
	}
	return sess, nil
}
