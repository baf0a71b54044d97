package client

import (
	"context"
	"fmt"
	"time"

	"github.com/quicprochat/qpc/client/content"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/mls"
	"github.com/quicprochat/qpc/sealed"
)

// SendMLS is for tools and tests that speak MLS themselves (the
// hostile-member tests play a member with it, internal/hostile): it loads
// this client's state of the conversation target, lets craft make one MLS
// message with it (a proposal, a commit, anything), keeps the state craft
// leaves, and queues the message, sealed as this client's, for the
// members named in to (every other member when to is nil), then tries to
// send it. The conversation's own record (members, history) is not
// changed, and nothing the client checks of its own messages is checked:
// the receivers' checks are what such a message meets.
func (c *Client) SendMLS(ctx context.Context, target string, to []string, craft func(*mls.Group) ([]byte, error)) error {
	c.op.Lock()
	defer c.op.Unlock()
	r, err := c.findConv(target)
	if err != nil {
		return err
	}
	g, err := c.loadGroup(ctx, r)
	if err != nil {
		return err
	}
	msg, err := craft(g)
	if err != nil {
		return err
	}
	if err := c.saveGroup(r, g); err != nil {
		return err
	}
	if to == nil {
		to = sortedKeys(r.Members)
	}
	err = c.store.Update(func(tx *state.Tx) error {
		if err := c.fanOut(tx, r, to, sealed.ContentMLS, msg); err != nil {
			return err
		}
		return putConv(tx, r)
	})
	if err != nil {
		return err
	}
	return c.flush(ctx)
}

// SendSealed is for tools and tests that play a member, like SendMLS: it
// queues payload, sealed as this client's with content type typ, for the
// members of conversation target named in to, and tries to send it.
// Nothing is checked or changed: the hostile-member tests send echoes of
// commits with it (docs/protocol.md §11.6).
func (c *Client) SendSealed(ctx context.Context, target string, to []string, typ sealed.ContentType, payload []byte) error {
	c.op.Lock()
	defer c.op.Unlock()
	r, err := c.findConv(target)
	if err != nil {
		return err
	}
	err = c.store.Update(func(tx *state.Tx) error { return c.fanOut(tx, r, to, typ, payload) })
	if err != nil {
		return err
	}
	return c.flush(ctx)
}

// StartMLS is for tools and tests that speak MLS themselves, like
// SendMLS: it starts a conversation as CreateGroup (group) or a first
// Send (direct) would, but with the MLS group made by opts (a chosen
// group ID, say), and without the checks those make of their arguments
// (name, members, an existing chat): the receivers' checks are what its
// Welcomes meet.
func (c *Client) StartMLS(ctx context.Context, direct bool, name string, handles []string, opts *mls.CreateOptions) error {
	c.op.Lock()
	defer c.op.Unlock()
	kind := content.ConvGroup
	if direct {
		kind = content.ConvDirect
	}
	if _, err := c.startConv(ctx, kind, name, handles, opts); err != nil {
		return err
	}
	return c.flush(ctx)
}

// MLSIdentity is this client's MLS identity, private key included, for
// tools and tests that speak MLS themselves like SendMLS (the
// hostile-member tests make external commits with it).
func (c *Client) MLSIdentity() *mls.Identity {
	c.op.Lock()
	defer c.op.Unlock()
	return c.mlsIdentity()
}

// StolenConv is what a thief who copied this device's state once holds
// of one conversation: its group state and its mailbox's keys. It is for
// the healing tests (internal/hostile): the copy reads the mailbox the
// real member reads, without acknowledging anything, and processes all
// it can, as a client on the copied state would.
type StolenConv struct {
	group *mls.Group
	box   mailboxRecord
	after uint64
	now   func() time.Time
}

// Steal copies the state of conversation target as it is now.
func (c *Client) Steal(ctx context.Context, target string) (*StolenConv, error) {
	c.op.Lock()
	defer c.op.Unlock()
	r, err := c.resolve(target)
	if err != nil {
		return nil, err
	}
	if r.Mailbox == nil {
		return nil, fmt.Errorf("%s has no mailbox yet", target)
	}
	cfg := c.mlsConfig(context.Background())
	cfg.VerifyMember = nil
	g, err := mls.UnmarshalGroup(r.Group, cfg)
	if err != nil {
		return nil, err
	}
	return &StolenConv{group: g, box: *r.Mailbox, now: c.opts.Now}, nil
}

// Read fetches what waits in the stolen mailbox (over conn, any
// connection to the server) and returns the texts the copy decrypts; the
// commits among them it applies.
func (s *StolenConv) Read(ctx context.Context, conn *protocol.Conn) ([]string, error) {
	key, err := sealed.ParseMailboxPrivateKey(s.box.Sealing)
	if err != nil {
		return nil, err
	}
	var texts []string
	for {
		msgs, more, err := conn.Fetch(ctx, s.box.mailbox(), s.after, 64)
		if err != nil {
			return texts, err
		}
		for _, m := range msgs {
			s.after = m.Seq
			op, err := sealed.Open(key, s.box.SendID, m.Envelope, s.now(), 0, nil)
			if err != nil || op.ContentType != sealed.ContentMLS {
				continue
			}
			rec, err := s.group.ProcessMessage(op.Content)
			if err != nil || rec.ContentType != mls.ContentTypeApplication {
				continue
			}
			if cm, err := content.ParseMessage(rec.ApplicationData); err == nil && cm.Kind == content.KindText {
				texts = append(texts, cm.Text)
			}
		}
		if !more || len(msgs) == 0 {
			return texts, nil
		}
	}
}

// Epoch is the epoch the stolen copy stands in.
func (s *StolenConv) Epoch() uint64 { return s.group.Epoch() }
