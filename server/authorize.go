package server

import (
	"context"

	"github.com/quicprochat/qpc/server/store"
)

// Authorizer is the single hook that decides whether an anonymous create
// or send may proceed. It sees only the request's opaque auth blob, never
// who sent it: neither the request nor this interface has any place for a
// session or an account. It returns the one-time Spend the store must
// record with the write (nil when nothing is spent). A refusal should be a
// *wire.Error.
type Authorizer interface {
	AuthorizeCreate(ctx context.Context, auth []byte) (*store.Spend, error)
	AuthorizeSend(ctx context.Context, auth []byte) (*store.Spend, error)
}

// OpenAccess lets every create and send through without a token. It is for
// tests and benchmarks only; the server logs a warning when it is used.
type OpenAccess struct{}

func (OpenAccess) AuthorizeCreate(context.Context, []byte) (*store.Spend, error) { return nil, nil }
func (OpenAccess) AuthorizeSend(context.Context, []byte) (*store.Spend, error)   { return nil, nil }
