package client

import (
	"context"
	"fmt"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/padding"
)

// The padding policy is pinned like the server's key and its KT keys
// (docs/protocol.md §3.1): the server's ServerHello must announce exactly
// the pinned buckets or the connection is refused (ErrPolicy). A server
// could otherwise choose, for one victim or for everyone, buckets fine
// enough that record and envelope sizes tell contents apart.

// Policy is the padding policy pinned for the server.
func (c *Client) Policy() padding.Policy {
	c.mu.Lock()
	defer c.mu.Unlock()
	return pinned(c.prof.Policy)
}

// pinned is the policy a state's pin p stands for. Init writes the
// policy it pins; a state without one was made when padding.V1 was the
// default and the pin was not written, so it keeps V1: a new release
// changing padding.Default never changes what an existing state pins
// (docs/adr/0018-buckets.md).
func pinned(p padding.Policy) padding.Policy {
	if p.IsZero() {
		return padding.V1
	}
	return p
}

// PinPolicy replaces the pinned padding policy, after checking that the
// server announces it: for an operator who changed the buckets and told
// their users so (docs/operations.md). Connections made under the old pin
// are closed. The zero Policy pins padding.Default.
func (c *Client) PinPolicy(ctx context.Context, p padding.Policy) error {
	c.op.Lock()
	defer c.op.Unlock()
	if p.IsZero() {
		p = padding.Default
	}
	opts := c.opts.Dial
	opts.Policy = p
	if opts.Tor != nil {
		t := *opts.Tor
		t.Isolation = "" // a random circuit, as for every connection
		opts.Tor = &t
	}
	conn, err := protocol.Dial(ctx, c.prof.Server, opts)
	if err != nil {
		return fmt.Errorf("checking the server under the new padding policy: %w", err)
	}
	conn.Close()
	c.mu.Lock()
	old := c.conns
	c.conns = map[string]*protocol.Conn{}
	c.prof.Policy = p
	c.mu.Unlock()
	for _, conn := range old {
		conn.Close()
	}
	return c.saveProfile()
}
