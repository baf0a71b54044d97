package accounts

import (
	"context"
	"crypto/subtle"
	"fmt"

	"github.com/quicprochat/qpc/account"
)

// AuthenticateUsername checks a session and that its account was
// registered under username (normalised). The store keeps only the
// credential ID SHA-256("qpc/1 account\0" || username), so the client names
// its username and the server checks the hash; key transparency uses this to
// let an account publish only under its own label. A mismatch is ErrAuth.
func (s *Service) AuthenticateUsername(ctx context.Context, token account.Token, username string) (AccountRef, error) {
	acct, _, err := s.Authenticate(ctx, token)
	if err != nil {
		return AccountRef{}, err
	}
	name, err := account.NormalizeUsername(username)
	if err != nil || name != username {
		return AccountRef{}, fmt.Errorf("accounts: authenticate username: %w", ErrInvalidUsername)
	}
	want := credentialID(username)
	got, err := s.store.Credential(ctx, acct)
	if err == nil && subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		err = ErrAuth
	}
	if err != nil {
		return AccountRef{}, fmt.Errorf("accounts: authenticate username: %w", err)
	}
	return acct, nil
}
