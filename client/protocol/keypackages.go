package protocol

import (
	"context"
	"fmt"

	"github.com/quicprochat/qpc/wire"
)

// The KeyPackage pool requests (docs/protocol.md §4.12): the account's
// side uploads one-time KeyPackages with its session, anyone takes one by
// handle with a delivery token. These are the raw calls; the messenger
// decides when to top a pool up and what to do when it is empty.

// UploadKeyPackages adds kps to the account's pool on session s and returns how many the pool holds and its limit. With no kps it only asks.
//
// An upload is all or nothing: one that would take the pool past its
// limit fails with QUOTA and stores none of kps. At most
// wire.MaxKeyPackageUpload KeyPackages go in one call, each 1 to
// wire.MaxKeyPackage bytes.
//
// An upload is not retried automatically, like IssueTokens: if its reply
// is lost, the KeyPackages may be in the pool already, and sending them
// again would put each in twice, so that two contacts could get the same
// one-time KeyPackage. Ask (no kps) to see where the pool stands, then
// upload fresh ones. A query alone is retried, as it changes nothing.
func (c *Conn) UploadKeyPackages(ctx context.Context, s *Session, kps [][]byte) (count, limit int, err error) {
	if len(kps) > wire.MaxKeyPackageUpload {
		return 0, 0, fmt.Errorf("upload key packages: %d KeyPackages, at most %d per upload", len(kps), wire.MaxKeyPackageUpload)
	}
	for _, kp := range kps {
		if len(kp) == 0 || len(kp) > wire.MaxKeyPackage {
			return 0, 0, fmt.Errorf("upload key packages: a KeyPackage of %d bytes (want 1 to %d)", len(kp), wire.MaxKeyPackage)
		}
	}
	err = c.do(ctx, len(kps) == 0, func(ctx context.Context, sess *session) error {
		m, err := c.call(ctx, sess, &wire.UploadKeyPackages{Session: s.Token, KeyPackages: kps})
		if err != nil {
			return err
		}
		r, ok := m.(*wire.KeyPackagesStored)
		if !ok {
			return unexpected(m)
		}
		count, limit = int(r.Count), int(r.Limit)
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("upload key packages: %w", err)
	}
	return count, limit, nil
}

// FetchKeyPackage takes one KeyPackage of handle's pool, paying with the token auth; it returns nil, nil when the server has none.
//
// None is the one answer for an empty pool and an unknown handle (the
// server does not tell them apart); the caller then falls back to the
// last-resort KeyPackage in the handle's key-transparency record. The
// KeyPackage is opaque here: check it against that record before use.
//
// The request names no account, only the handle: send it on a connection
// that carries no session of yours (ideally a Tor circuit of its own), or
// the server could link whom you contact to who you are.
//
// A fetch is not retried automatically. The server spends the token
// before it takes the KeyPackage, so after a lost reply (or an
// UNAVAILABLE or INTERNAL answer) the token may be spent, and a retry with
// it would only be refused with TOKEN_SPENT, while the KeyPackage the
// first attempt took, if it took one, is gone either way. After an error,
// try again with a fresh token.
func (c *Conn) FetchKeyPackage(ctx context.Context, handle string, auth []byte) ([]byte, error) {
	if len(handle) == 0 || len(handle) > wire.MaxHandle {
		return nil, fmt.Errorf("fetch key package: a handle of %d bytes (want 1 to %d)", len(handle), wire.MaxHandle)
	}
	var kp []byte
	err := c.do(ctx, false, func(ctx context.Context, s *session) error {
		m, err := c.call(ctx, s, &wire.FetchKeyPackage{Handle: handle, Auth: auth})
		if err != nil {
			return err
		}
		r, ok := m.(*wire.KeyPackageReply)
		if !ok {
			return unexpected(m)
		}
		kp = r.KeyPackage
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("fetch key package: %w", err)
	}
	if len(kp) == 0 {
		return nil, nil
	}
	return kp, nil
}
