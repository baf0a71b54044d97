package hostile_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/mls"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/sealed"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/wire"
)

// Sizes of TestAttackIntroGarbage.
const (
	introQuota     = 200      // messages the test server keeps per mailbox
	fakeChunks     = 50       // first chunks of sets from senders key transparency does not know
	realChunkSets  = 10       // incomplete sets from each of the attacker's own accounts
	undecryptable  = 30       // envelopes sealed to another key
	garbageChunk   = 24 << 10 // content bytes of each garbage chunk
	introStateMax  = 2 << 20  // what bob's local state may grow by
	introReachTime = time.Minute
	// clientMaxDeferred is what a client leaves unacknowledged in one
	// mailbox (client/deferred.go maxDeferred).
	clientMaxDeferred = 64
)

// introAttacker seals garbage to bob's intro mailbox and writes it
// straight into the server's store, each envelope as a Send would (over
// the wire each costs a token, well inside a stranger's budget: the
// quota is the budget).
type introAttacker struct {
	t      *testing.T
	h      *hostile.Server
	sendID wire.ID
	key    *sealed.MailboxPublicKey
	policy padding.Policy
	quota  store.Quota
	real   []sealed.SenderIdentity // accounts key transparency shows
}

func (a *introAttacker) fake() sealed.SenderIdentity {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		a.t.Fatal(err)
	}
	var b [6]byte
	rand.Read(b[:])
	return sealed.SenderIdentity{Key: key, Handle: fmt.Sprintf("fake%x", b)}
}

// put stores one envelope; false once bob's mailbox is full.
func (a *introAttacker) put(env []byte) bool {
	a.t.Helper()
	var id [store.MessageIDSize]byte
	rand.Read(id[:])
	_, err := a.h.Store().Put(context.Background(), a.sendID, id, env, a.quota, time.Now(), nil)
	if errors.Is(err, store.ErrQuotaCount) || errors.Is(err, store.ErrQuotaBytes) {
		return false
	}
	if err != nil {
		a.t.Fatal(err)
	}
	return true
}

func (a *introAttacker) seal(from sealed.SenderIdentity, ct sealed.ContentType, content []byte) []byte {
	a.t.Helper()
	env, err := sealed.Seal(a.policy, a.key, a.sendID, from, ct, content, time.Now())
	if err != nil {
		a.t.Fatal(err)
	}
	return env
}

// chunk is the first chunk of a set of three that never completes.
func (a *introAttacker) chunk(from sealed.SenderIdentity) []byte {
	var id padding.ChunkID
	rand.Read(id[:])
	payload := make([]byte, 3*garbageChunk)
	rand.Read(payload)
	chunks, err := padding.Split(id, payload, garbageChunk+padding.ChunkHeaderSize)
	if err != nil {
		a.t.Fatal(err)
	}
	return a.seal(from, sealed.ContentChunk, chunks[0])
}

// unknownGroup is an MLS message for a group bob never joins.
func (a *introAttacker) unknownGroup(from sealed.SenderIdentity) []byte {
	a.t.Helper()
	gid := make([]byte, 32)
	rand.Read(gid)
	ct := make([]byte, 200)
	rand.Read(ct)
	m := &mls.MLSMessage{Version: mls.MLS10, WireFormat: mls.WireFormatPrivateMessage, PrivateMessage: &mls.PrivateMessage{
		GroupID: gid, Epoch: 1, ContentType: mls.ContentTypeApplication, EncryptedSenderData: ct[:50], Ciphertext: ct[50:],
	}}
	raw, err := m.Marshal()
	if err != nil {
		a.t.Fatal(err)
	}
	return a.seal(from, sealed.ContentMLS, raw)
}

// fillUnknown tops bob's mailbox up with unknown-group messages, half
// from the attacker's own accounts, the rest from forged senders (unknown
// handles, or a real handle with a key of the attacker's), and returns
// how many it wrote.
func (a *introAttacker) fillUnknown() int {
	n := 0
	for ; ; n++ {
		from := a.real[n%len(a.real)]
		switch n % 4 {
		case 3:
			from = a.fake()
		case 2:
			// A real account's handle under a key of the stranger's.
			from = a.fake()
			from.Handle = a.real[0].Handle
		}
		if !a.put(a.unknownGroup(from)) {
			return n
		}
	}
}

// realAccount publishes a binding of a fresh identity under handle, as
// registering does, and returns the identity.
func realAccount(t *testing.T, h *hostile.Server, handle string) sealed.SenderIdentity {
	t.Helper()
	b, key := signedBinding(t, handle)
	done, err := h.KT().Enqueue(handle, b.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s not published", handle)
	}
	return sealed.SenderIdentity{Key: key, Handle: handle}
}

// dirSize is the bytes of the files under dir.
func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err == nil {
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestAttackIntroGarbage: bob's intro mailbox is public in key
// transparency. A stranger with tokens fills it to the quota with
// garbage: first chunks of sets that never complete, from forged senders
// and from accounts of its own; envelopes bob cannot decrypt; and MLS
// messages for groups bob never joins. After bob reads it, the stranger
// tops it up to the quota again. Then carol, a new contact, adds bob and
// writes: bob gets her message within introReachTime, and his local
// state grows by at most introStateMax. Before the fix, unknown-group
// messages stayed on the server unacknowledged for 7 days, so the
// mailbox stayed full and carol's Welcome was refused; forged senders'
// chunks were kept for 7 days.
func TestAttackIntroGarbage(t *testing.T) {
	h := hostile.Start(t, hostile.Options{
		Server:   func(o *server.Options) { o.Quota = store.Quota{MaxMessages: introQuota, MaxBytes: 1 << 30} },
		Accounts: hostile.RoomyAccounts,
	})
	bobOpts := h.ClientOptions(t)
	bob := h.NewUserWith(t, "bob", "bob", bobOpts)
	carol := h.NewUser(t, "carol", "carol")
	ctx := ctxT(t)
	// The stranger looks bob up like anyone.
	bobCt, err := h.NewUser(t, "lookup", "lookup").AddContact(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	introKey, err := sealed.ParseMailboxPublicKey(bobCt.IntroKey)
	if err != nil {
		t.Fatal(err)
	}
	pp, err := sealed.PlaintextPolicy(h.Policy(), tokens.TokenSize)
	if err != nil {
		t.Fatal(err)
	}
	a := &introAttacker{t: t, h: h, sendID: bobCt.IntroSendID, key: introKey, policy: pp,
		quota: store.Quota{MaxMessages: introQuota, MaxBytes: 1 << 30}}
	a.real = []sealed.SenderIdentity{realAccount(t, h, "mallory1"), realAccount(t, h, "mallory2")}
	if _, err := bob.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	state0 := dirSize(t, bobOpts.Home)

	sent := 0
	for range fakeChunks {
		if !a.put(a.chunk(a.fake())) {
			t.Fatal("mailbox full early")
		}
		sent++
	}
	for _, m := range a.real {
		for range realChunkSets {
			if !a.put(a.chunk(m)) {
				t.Fatal("mailbox full early")
			}
			sent++
		}
	}
	other, err := sealed.GenerateMailboxKey()
	if err != nil {
		t.Fatal(err)
	}
	for range undecryptable {
		env, err := sealed.Seal(pp, other.Public(), a.sendID, a.fake(), sealed.ContentMLS, []byte("x"), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if !a.put(env) {
			t.Fatal("mailbox full early")
		}
		sent++
	}
	sent += a.fillUnknown()

	start := time.Now()
	if _, err := bob.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	firstSync := time.Since(start)
	topUp := a.fillUnknown()
	start = time.Now()
	if _, err := bob.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	secondSync := time.Since(start)
	t.Logf("the stranger wrote %d envelopes, then %d more after bob's first read; bob's reads took %v and %v",
		sent, topUp, firstSync.Round(time.Millisecond), secondSync.Round(time.Millisecond))
	if left := introQuota - topUp; left > clientMaxDeferred {
		t.Errorf("bob left %d envelopes unacknowledged on the server, bound %d", left, clientMaxDeferred)
	}

	// carol's first contact.
	start = time.Now()
	if _, err := carol.AddContact(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := carol.Send(ctx, "bob", "hello bob"); err != nil {
		t.Logf("carol's send: %v", err)
	}
	var got []string
	for time.Since(start) < introReachTime && !slices.Contains(got, "carol: hello bob") {
		carol.Sync(ctxT(t))
		ev, err := bob.Sync(ctxT(t))
		if err != nil {
			t.Logf("bob sync: %v", err)
		}
		for _, e := range ev {
			if e.Kind == client.EventMessage {
				got = append(got, e.From+": "+e.Text)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	reach := time.Since(start)
	grew := dirSize(t, bobOpts.Home) - state0
	alarms, err := bob.Alarms()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("carol reached bob in %v; bob's state grew by %d KiB (bound %d KiB); %d alarms recorded",
		reach.Round(time.Millisecond), grew>>10, introStateMax>>10, len(alarms))
	if !slices.Contains(got, "carol: hello bob") {
		t.Errorf("bob never got carol's first message in %v (got %q)", introReachTime, got)
	}
	if grew > introStateMax {
		t.Errorf("bob's local state grew by %d KiB, bound %d KiB", grew>>10, introStateMax>>10)
	}
	if len(alarms) > 40 {
		t.Errorf("%d alarms recorded for garbage", len(alarms))
	}
}
