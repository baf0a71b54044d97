package accounts

import (
	"context"
	"fmt"

	"github.com/quicprochat/qpc/wire"
)

// KeyPackage pools (docs/protocol.md §4.12). Each account keeps a pool of
// one-time MLS KeyPackages that others take, one per first contact, with
// nothing but the account's handle and a delivery token. The pool is
// first in, first out; the KeyPackages are opaque here (the fetching
// client checks them against the handle's key-transparency record).
//
// The pool is keyed by the account's random AccountRef, never by the
// username; a take finds it through the credential identifier, as a
// login does.

// UploadKeyPackages appends kps to the account's pool and returns how
// many KeyPackages the pool holds afterwards. An upload that would take
// the pool past limit is refused whole with ErrPoolFull (and the count
// the pool holds). With no kps it only counts.
//
// Errors: ErrMalformed (an empty KeyPackage or one over
// wire.MaxKeyPackage bytes), ErrPoolFull, ErrNotFound (the account is
// gone), ErrStorage, ErrClosed, or the context's error.
func (s *Service) UploadKeyPackages(ctx context.Context, acct AccountRef, kps [][]byte, limit int) (int, error) {
	if limit < 1 {
		return 0, fmt.Errorf("accounts: upload key packages: limit = %d", limit)
	}
	for _, kp := range kps {
		if len(kp) == 0 || len(kp) > wire.MaxKeyPackage {
			return 0, fmt.Errorf("accounts: upload key packages: %w: a KeyPackage of %d bytes", ErrMalformed, len(kp))
		}
	}
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	count, err := s.store.AddKeyPackages(ctx, acct, kps, limit)
	if err != nil {
		return count, fmt.Errorf("accounts: upload key packages: %w", err)
	}
	return count, nil
}

// TakeKeyPackage removes the oldest KeyPackage from the pool of the
// account registered as username and returns it. It returns nil, nil when
// there is none to give: an empty pool, an unknown username and a
// malformed one are one answer, reached by one path (a write transaction
// that finds nothing), so that neither the reply nor its cost tells them
// apart.
//
// username is not normalised: accounts are registered under normalised
// names, so a name that is not in normal form matches no credential
// identifier (short of a SHA-256 collision) and takes from no pool. The
// client names the handle exactly as its key-transparency label.
//
// Every take is one write transaction, so two takes never return the
// same KeyPackage.
//
// Errors: ErrStorage (ErrCorrupt for a record that does not decode),
// ErrClosed, or the context's error.
func (s *Service) TakeKeyPackage(ctx context.Context, username string) ([]byte, error) {
	cred := credentialID(username)
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	kp, err := s.store.TakeKeyPackage(ctx, cred)
	if err != nil {
		return nil, fmt.Errorf("accounts: take key package: %w", err)
	}
	return kp, nil
}
