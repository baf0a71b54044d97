package hostile_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/wire"
)

// TestAttackStrangerMailboxesExpire: a stranger registers, takes tokens
// and spends them on mailboxes it never uses, some holding a message.
// Mailboxes used to live for ever, so what one account could make the
// server keep grew without end. After the idle TTL (90 days by default,
// on the server's clock) every one of them is gone, with its messages'
// keys; an owner's mailbox that she fetched from midway and one she holds
// a live subscription on stay, and still work.
func TestAttackStrangerMailboxesExpire(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Server: func(o *server.Options) { o.PurgeInterval = 20 * time.Millisecond }})
	ctx := ctxT(t)
	mallory, err := protocol.Dial(ctx, h.Addr("mallory"), h.ClientOptions(t).Dial)
	if err != nil {
		t.Fatal(err)
	}
	defer mallory.Close()
	var dev [16]byte
	rand.Read(dev[:])
	sess, err := mallory.Register(ctx, "mallory", []byte("password of mallory"), dev, "mallory")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := mallory.TokenKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	toks, err := mallory.IssueTokens(ctx, sess, keys.Keys[keys.Current], 40)
	if err != nil {
		t.Fatal(err)
	}
	spend := func() []byte {
		t.Helper()
		tok := toks[0]
		toks = toks[1:]
		b, err := (&tok).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var junk []*protocol.Mailbox
	for i := range 20 {
		mb, err := mallory.CreateMailbox(ctx, spend())
		if err != nil {
			t.Fatal(err)
		}
		junk = append(junk, mb)
		if i < 8 {
			if _, err := mallory.Send(ctx, mb.SendID, protocol.NewMessageID(), bytes.Repeat([]byte{byte(i)}, 1000), spend()); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The owner's two mailboxes, paid with tokens like any other.
	owner, err := protocol.Dial(ctx, h.Addr("owner"), h.ClientOptions(t).Dial)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	fetched, err := owner.CreateMailbox(ctx, spend())
	if err != nil {
		t.Fatal(err)
	}
	subscribed, err := owner.CreateMailbox(ctx, spend())
	if err != nil {
		t.Fatal(err)
	}
	sub, err := owner.Subscribe(ctx, subscribed, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	// 45 days on, the owner fetches; 46 more, and the stranger's have
	// been idle for more than 90 days, the fetched one for 46.
	h.Clock.Advance(45 * 24 * time.Hour)
	if _, _, err := owner.Fetch(ctx, fetched, 0, 10); err != nil {
		t.Fatal(err)
	}
	h.Clock.Advance(46 * 24 * time.Hour)

	left := func() int {
		n := 0
		for _, mb := range junk {
			_, err := h.Store().Mailbox(ctx, mb.ReceiveID)
			if err == nil {
				n++
			} else if !errors.Is(err, store.ErrNotFound) {
				t.Fatal(err)
			}
		}
		return n
	}
	deadline := time.Now().Add(3 * time.Second)
	for left() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := left(); n > 0 {
		t.Fatalf("%d of the stranger's %d unused mailboxes are still stored 91 days on", n, len(junk))
	}
	// The stranger's owner requests find nothing.
	_, _, err = mallory.Fetch(ctx, junk[0], 0, 10)
	if code, _ := wire.CodeOf(err); code != wire.CodeNotFound {
		t.Fatalf("the stranger's fetch from an expired mailbox: %v, want NOT_FOUND", err)
	}
	// Every key the stranger's messages were sealed under is zeros.
	raw, err := os.ReadFile(filepath.Join(h.Dir, "qpc.db"+store.KeyFileSuffix))
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) <= 4096 {
		t.Fatalf("key-slot file of %d bytes", len(raw))
	}
	if !bytes.Equal(raw[4096:], make([]byte, len(raw)-4096)) {
		t.Fatal("the key-slot file still holds a key of an expired mailbox's message")
	}
	// The owner's mailboxes stay and work.
	for _, mb := range []*protocol.Mailbox{fetched, subscribed} {
		if _, err := h.Store().Mailbox(ctx, mb.ReceiveID); err != nil {
			t.Fatalf("a used mailbox was deleted: %v", err)
		}
	}
	if _, _, err := owner.Fetch(ctx, fetched, 0, 10); err != nil {
		t.Fatalf("the owner's fetch after the purge: %v", err)
	}
	if err := sub.Err(); err != nil {
		t.Fatalf("the live subscription ended: %v", err)
	}
}
