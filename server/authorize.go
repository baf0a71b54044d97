package server

import "context"

// Authorizer is the single hook that decides whether an anonymous create
// or send may proceed. It sees only the request's opaque auth blob, never
// who sent it. The default allows everything; anonymous delivery tokens
// plug in here. A refusal should be a *wire.Error with CodeForbidden.
type Authorizer interface {
	AuthorizeCreate(ctx context.Context, auth []byte) error
	AuthorizeSend(ctx context.Context, auth []byte) error
}

type allowAll struct{}

func (allowAll) AuthorizeCreate(context.Context, []byte) error { return nil }
func (allowAll) AuthorizeSend(context.Context, []byte) error   { return nil }
