package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/quicprochat/qpc/internal/secretfile"
	"github.com/quicprochat/qpc/server/accounts"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/wire"
)

// TokenKeyFile holds the master secret every epoch's token key is derived
// from (tokens.NewIssuer).
const TokenKeyFile = "tokens.key"

// LoadOrCreateTokenSecret reads dir/tokens.key, creating it (mode 0600)
// with a fresh random secret the first time.
func LoadOrCreateTokenSecret(dir string) ([]byte, error) {
	path := filepath.Join(dir, TokenKeyFile)
	secret, err := os.ReadFile(path)
	if err == nil {
		if len(secret) != tokens.MasterSecretSize {
			return nil, fmt.Errorf("token secret: %s has %d bytes, want %d", path, len(secret), tokens.MasterSecretSize)
		}
		return secret, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("token secret: %w", err)
	}
	secret = make([]byte, tokens.MasterSecretSize)
	rand.Read(secret)
	if err := secretfile.Create(path, secret); err != nil {
		return nil, fmt.Errorf("token secret: %w", err)
	}
	return secret, nil
}

// TokenAuthorizer requires one valid, unspent delivery token per create and
// per send. It holds only the issuer's keys: nothing in it can reach an
// account or a session, so redemption is unlinkable to issuance by
// construction (the issuer saw only blinded elements).
type TokenAuthorizer struct {
	issuer *tokens.Issuer
	epoch  time.Duration
}

// NewTokenAuthorizer builds the authorizer for tokens of issuer, whose
// epochs last epoch.
func NewTokenAuthorizer(issuer *tokens.Issuer, epoch time.Duration) *TokenAuthorizer {
	return &TokenAuthorizer{issuer: issuer, epoch: epoch}
}

func (a *TokenAuthorizer) AuthorizeCreate(ctx context.Context, auth []byte) (*store.Spend, error) {
	return a.redeem(auth)
}

func (a *TokenAuthorizer) AuthorizeSend(ctx context.Context, auth []byte) (*store.Spend, error) {
	return a.redeem(auth)
}

func (a *TokenAuthorizer) redeem(auth []byte) (*store.Spend, error) {
	if len(auth) == 0 {
		return nil, wire.Errorf(wire.CodeTokenMissing, "this server requires a delivery token")
	}
	tok, err := tokens.ParseToken(auth)
	if err != nil {
		return nil, wire.Errorf(wire.CodeTokenMissing, "auth is not a delivery token")
	}
	switch err := a.issuer.Redeem(tok); {
	case errors.Is(err, tokens.ErrEpoch):
		return nil, wire.Errorf(wire.CodeTokenExpired, "token epoch %d is not accepted now", tok.Epoch)
	case errors.Is(err, tokens.ErrInvalid):
		return nil, wire.Errorf(wire.CodeTokenInvalid, "token does not verify")
	case err != nil:
		return nil, err
	}
	// A token is accepted in its own epoch and the next; after that its
	// spend record is no longer needed.
	until := time.Unix(0, 0).Add(time.Duration(tok.Epoch+2) * a.epoch)
	return &store.Spend{Key: tokens.SpendKey(tok), Until: until}, nil
}

// tokenKeys answers TokenKeys: the previous, current and next epoch keys,
// the same for every caller, so a client can compare what others see.
func (s *Server) tokenKeys() (wire.Message, error) {
	if s.opts.Tokens == nil {
		return nil, wire.Errorf(wire.CodeUnavailable, "this server issues no tokens")
	}
	cur := s.opts.Tokens.Epoch()
	list := &wire.TokenKeyList{Current: cur, EpochSeconds: uint32(s.opts.TokenEpoch / time.Second)}
	for e := max(cur, 1) - 1; e <= cur+1; e++ {
		pk, err := s.opts.Tokens.PublicKey(e)
		if err != nil {
			return nil, err
		}
		raw, err := pk.MarshalBinary()
		if err != nil {
			return nil, err
		}
		list.Keys = append(list.Keys, wire.EpochKey{Epoch: e, Key: raw})
	}
	return list, nil
}

// tokenAccount is where IssueTokens and TokenQuota start: a server that
// issues tokens, and the account of session (noted for the observer).
func (s *Server) tokenAccount(ctx context.Context, session [wire.SessionSize]byte) (accounts.AccountRef, error) {
	if s.opts.Tokens == nil || s.opts.Accounts == nil {
		return accounts.AccountRef{}, wire.Errorf(wire.CodeUnavailable, "this server issues no tokens")
	}
	acct, _, err := s.opts.Accounts.Authenticate(ctx, session)
	if err != nil {
		return accounts.AccountRef{}, accountError(err)
	}
	s.noteAccount(ctx, acct)
	return acct, nil
}

// issueTokens evaluates a batch of blinded tokens for a logged-in account,
// charged against its per-epoch quota. The quota counts tokens, nothing
// else: the blinded elements are not stored.
func (s *Server) issueTokens(ctx context.Context, m *wire.IssueTokens) (wire.Message, error) {
	acct, err := s.tokenAccount(ctx, m.Session)
	if err != nil {
		return nil, err
	}
	req, err := tokens.ParseTokenRequest(m.Request)
	if err != nil {
		return nil, wire.Errorf(wire.CodeProtocol, "malformed token request")
	}
	if cur := s.opts.Tokens.Epoch(); req.Epoch != cur {
		return nil, wire.Errorf(wire.CodeTokenExpired, "tokens are issued for epoch %d", cur)
	}
	if err := s.opts.Accounts.ConsumeQuota(ctx, acct, req.Epoch, len(req.Blinded), s.opts.TokenQuota); err != nil {
		return nil, accountError(err)
	}
	resp, err := s.opts.Tokens.Issue(req)
	if err != nil {
		return nil, wire.Errorf(wire.CodeProtocol, "token request refused: %v", err)
	}
	raw, err := resp.MarshalBinary()
	if err != nil {
		return nil, err
	}
	s.opts.Metrics.TokensIssued(len(req.Blinded))
	return &wire.TokensIssued{Response: raw}, nil
}

// tokenQuota answers TokenQuota: the account's allowance per epoch and
// what it took in the current one, so that a client can size its cover
// traffic before the quota starves its real messages. It changes nothing.
func (s *Server) tokenQuota(ctx context.Context, m *wire.TokenQuota) (wire.Message, error) {
	acct, err := s.tokenAccount(ctx, m.Session)
	if err != nil {
		return nil, err
	}
	cur := s.opts.Tokens.Epoch()
	used, err := s.opts.Accounts.QuotaUsed(ctx, acct, cur)
	if err != nil {
		return nil, accountError(err)
	}
	return &wire.TokenQuotaStatus{
		Epoch:        cur,
		EpochSeconds: uint32(s.opts.TokenEpoch / time.Second),
		Quota:        uint32(s.opts.TokenQuota),
		Issued:       uint32(used),
	}, nil
}
