package server

import (
	"context"
	"errors"

	"github.com/quicprochat/qpc/server/accounts"
	"github.com/quicprochat/qpc/wire"
)

// KeyPackage pools (docs/protocol.md §4.12). Uploads are bound to an
// account by its session; fetches are anonymous and paid with a delivery
// token, like a send, so the server learns that someone is about to
// contact a handle and never who. Neither handler logs the handle or the
// account: logFailure logs only the kind and the code, and the errors of
// package accounts name neither.

// uploadKeyPackages adds KeyPackages to the pool of the session's
// account, or with none only reports the pool's count and limit.
func (s *Server) uploadKeyPackages(ctx context.Context, m *wire.UploadKeyPackages) (wire.Message, error) {
	if s.opts.Accounts == nil {
		return nil, wire.Errorf(wire.CodeUnavailable, "this server has no accounts")
	}
	acct, _, err := s.opts.Accounts.Authenticate(ctx, m.Session)
	if err != nil {
		return nil, keyPackageError(err)
	}
	s.noteAccount(ctx, acct)
	n, err := s.opts.Accounts.UploadKeyPackages(ctx, acct, m.KeyPackages, s.opts.KeyPackagePool)
	if err != nil {
		return nil, keyPackageError(err)
	}
	s.opts.Metrics.KeyPackagesUploaded(len(m.KeyPackages))
	return &wire.KeyPackagesStored{Count: uint16(n), Limit: uint16(s.opts.KeyPackagePool)}, nil
}

// fetchKeyPackage takes one KeyPackage out of a handle's pool for
// whoever pays with a token. The token is spent first, in the mailbox
// store, and the KeyPackage taken after, in the accounts database: if the
// take fails, the token is lost, never a KeyPackage given away unpaid
// (tokens are cheap, KeyPackages scarce). An empty pool and an unknown
// handle are the same answer, an empty KeyPackageReply.
func (s *Server) fetchKeyPackage(ctx context.Context, m *wire.FetchKeyPackage) (wire.Message, error) {
	if s.opts.Accounts == nil {
		return nil, wire.Errorf(wire.CodeUnavailable, "this server has no accounts")
	}
	spend, err := s.opts.Authorizer.AuthorizeSend(ctx, m.Auth)
	if err != nil {
		s.countTokenRejection(err)
		return nil, authError(err)
	}
	if spend != nil {
		if err := s.opts.Store.Spend(ctx, spend); err != nil {
			err = storeError(err)
			s.countTokenRejection(err)
			return nil, err
		}
		s.opts.Metrics.TokenRedeemed()
	}
	kp, err := s.opts.Accounts.TakeKeyPackage(ctx, m.Handle)
	if err != nil {
		return nil, keyPackageError(err)
	}
	s.opts.Metrics.KeyPackageFetched(kp != nil)
	return &wire.KeyPackageReply{KeyPackage: kp}, nil
}

// keyPackageError maps the errors of the pool's account calls to
// protocol codes: a full pool is QUOTA; the rest as for other account
// requests.
func keyPackageError(err error) error {
	switch {
	case errors.Is(err, accounts.ErrPoolFull):
		return wire.Errorf(wire.CodeQuota, "the KeyPackage pool would exceed its limit")
	case errors.Is(err, accounts.ErrNotFound):
		// The session's account was deleted between the session check
		// and the upload: to the client, its session is gone.
		return wire.Errorf(wire.CodeAuth, "authentication failed")
	}
	return accountError(err)
}
