package hostile_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"math"
	mrand "math/rand/v2"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/wire"
)

// Token keys and refills (docs/key-transparency.md §2, issue 17 items 4
// and 5): a server that shows one user a token key or an epoch of its
// own could link every send that user pays for.

// ownTokenKey is a token key for epoch under a secret only the lying
// server knows: not the one it committed in key transparency.
func ownTokenKey(t *testing.T, epoch uint32) *tokens.PublicKey {
	t.Helper()
	secret := make([]byte, tokens.MasterSecretSize)
	rand.Read(secret)
	iss, err := tokens.NewIssuer(secret, tokens.WithEpochLength(hostile.TokenEpoch))
	if err != nil {
		t.Fatal(err)
	}
	pk, err := iss.PublicKey(epoch)
	if err != nil {
		t.Fatal(err)
	}
	return pk
}

// showTokenKey makes the server answer tag's TokenKeys with pk as the
// key of the current epoch current; it counts the answers replaced.
func showTokenKey(t *testing.T, h *hostile.Server, tag string, current uint32, pk *tokens.PublicKey) *atomic.Int32 {
	t.Helper()
	raw, err := pk.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	h.Rewrite(func(x *hostile.Exchange) {
		if _, ok := x.Response.(*wire.TokenKeyList); ok && x.Tag == tag {
			n.Add(1)
			x.Response = &wire.TokenKeyList{Current: current, EpochSeconds: uint32(hostile.TokenEpoch / time.Second),
				Keys: []wire.EpochKey{{Epoch: current, Key: raw}}}
		}
	})
	return &n
}

// issueRequests counts the IssueTokens requests that came in through tag.
func issueRequests(h *hostile.Server, tag string) int {
	n := 0
	for _, e := range h.Events() {
		if e.FromClient && e.Tag == tag && e.Kind == wire.KindIssueTokens {
			n++
		}
	}
	return n
}

// tokenAlarms are c's recorded token-key alarms.
func tokenAlarms(t *testing.T, c *client.Client) []client.Alarm {
	t.Helper()
	all, err := c.Alarms()
	if err != nil {
		t.Fatal(err)
	}
	var out []client.Alarm
	for _, a := range all {
		if a.Kind == client.AlarmTokenKey {
			out = append(out, a)
		}
	}
	return out
}

// initUser is NewUser without the registration.
func initUser(t *testing.T, h *hostile.Server, tag string) (*client.Client, client.Options) {
	t.Helper()
	opts := h.ClientOptions(t)
	c, err := client.Init(ctxT(t), h.Addr(tag), h.Pin(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, opts
}

// TestHostileServerOwnTokenKey: the server shows one user, from the start,
// a token key of its own for the current epoch (not the one it committed
// in key transparency), so that every token she spends would be hers.
// Her client refuses the key before any IssueTokens, raises a token-key
// alarm, and registration stops for want of tokens; another user is not
// affected.
func TestHostileServerOwnTokenKey(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	cur := h.Issuer.Epoch()
	shown := showTokenKey(t, h, "target", cur, ownTokenKey(t, cur))
	target, _ := initUser(t, h, "target")
	err := target.Register(ctxT(t), "target", []byte("password of target"))
	if err == nil {
		t.Fatal("registered with tokens under the server's own key")
	}
	if shown.Load() == 0 {
		t.Fatal("the rewrite never ran")
	}
	if n := issueRequests(h, "target"); n != 0 {
		t.Fatalf("%d IssueTokens requests under the server's own key", n)
	}
	al := tokenAlarms(t, target)
	if len(al) == 0 {
		t.Fatalf("no token-key alarm (register: %v)", err)
	}
	if !strings.Contains(al[0].Detail, "key-transparency") || len(al[0].Evidence) == 0 {
		t.Fatalf("alarm without the KT mismatch or evidence: %+v", al[0])
	}
	h.NewUser(t, "other", "other") // honest answers elsewhere: fine
	if issueRequests(h, "other") == 0 {
		t.Fatal("the other user obtained no tokens")
	}
}

// TestHostileServerTokenEpoch: the server names an epoch of the target's
// own, in the future or the past, and even commits its key for that epoch
// in key transparency, so the key check passes; the clock does not. No
// IssueTokens, a token-key alarm.
func TestHostileServerTokenEpoch(t *testing.T) {
	for _, tc := range []struct {
		name  string
		shift int
	}{{"future", +5}, {"past", -3}} {
		t.Run(tc.name, func(t *testing.T) {
			h := hostile.Start(t, hostile.Options{})
			epoch := uint32(int(h.Issuer.Epoch()) + tc.shift)
			pk, err := h.Issuer.PublicKey(epoch)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := pk.MarshalBinary()
			if _, err := h.KT().Publish(ctxT(t), kt.TokenKeyLabel(epoch), raw); err != nil {
				t.Fatal(err)
			}
			showTokenKey(t, h, "target", epoch, pk)
			target, _ := initUser(t, h, "target")
			if err := target.Register(ctxT(t), "target", []byte("password of target")); err == nil {
				t.Fatal("registered with tokens of an epoch the clock contradicts")
			}
			if n := issueRequests(h, "target"); n != 0 {
				t.Fatalf("%d IssueTokens requests for epoch %d", n, epoch)
			}
			al := tokenAlarms(t, target)
			if len(al) == 0 || !strings.Contains(al[0].Detail, "clock") {
				t.Fatalf("alarms %+v, want one naming the clock", al)
			}
		})
	}
}

// TestHostileServerTokenKeyChangedAfterRestart: after the user's client
// checked and remembered the current epoch's key, it is closed; reopened,
// the server shows it another key for the same epoch. The remembered key
// (in the encrypted local state) refuses it: an alarm, no IssueTokens,
// and the tokens already held stay spendable.
func TestHostileServerTokenKeyChangedAfterRestart(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	target, opts := initUser(t, h, "target")
	if err := target.Register(ctxT(t), "target", []byte("password of target")); err != nil {
		t.Fatal(err)
	}
	target.Close()
	before := issueRequests(h, "target")
	cur := h.Issuer.Epoch()
	shown := showTokenKey(t, h, "target", cur, ownTokenKey(t, cur))
	again, err := client.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { again.Close() })
	if err := again.RefillIfEmpty(ctxT(t)); err != nil {
		t.Fatal(err) // the wallet is not empty: only the key is checked
	}
	if shown.Load() == 0 {
		t.Fatal("the client did not look at the token keys")
	}
	al := tokenAlarms(t, again)
	if len(al) == 0 || !strings.Contains(al[0].Detail, "changed its token key") {
		t.Fatalf("alarms %+v, want one for a changed key", al)
	}
	if n := issueRequests(h, "target"); n != before {
		t.Fatalf("%d IssueTokens requests after the change", n-before)
	}
	// Tokens obtained under the committed key are still good.
	friend := h.NewUser(t, "friend", "friend")
	if err := again.Send(ctxT(t), "friend", "still here"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, friend); len(got) != 1 || got[0] != "target: still here" {
		t.Fatalf("friend got %q", got)
	}
}

// TestHostileServerBindingTokenCommitment: bob's binding commits to a
// token key for the current epoch that is not the one alice was shown and
// key transparency holds (what a client shown a key of the server's own
// publishes), and to one for an epoch never committed. Alice's lookup
// raises a token-key alarm for each.
func TestHostileServerBindingTokenCommitment(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	alice := h.NewUser(t, "alice", "alice")
	ctx := ctxT(t)
	conn, sess := registerRaw(t, h, "bob")
	_, idKey, _ := ed25519.GenerateKey(rand.Reader)
	cur := h.Issuer.Epoch()
	own, _ := ownTokenKey(t, cur).MarshalBinary()
	b := &kt.Binding{
		Label: "bob", IdentityKeys: []ed25519.PublicKey{idKey.Public().(ed25519.PublicKey)},
		IntroKey: make([]byte, 1216),
		TokenKeys: []kt.TokenKeyCommitment{
			{Epoch: cur, Hash: sha256Sum(own)},
			{Epoch: cur - 40, Hash: sha256Sum(own)},
		},
	}
	if err := b.Sign(idKey); err != nil {
		t.Fatal(err)
	}
	publishBinding(t, h, conn, sess, b)
	if _, err := alice.AddContact(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	al := tokenAlarms(t, alice)
	if len(al) != 2 || !strings.Contains(al[0].Detail, "bob") {
		t.Fatalf("alarms %+v, want two about bob's commitments", al)
	}
}

// TestHostileServerRefillTiming: the server watches when each account
// refills and when anonymous connections spend, to tie the two. With the
// real wallet: spends never start a refill (the wallet is spent down to
// nothing and no IssueTokens follows), and the refill schedule is the
// wallet's own: every IssueTokens starts at one of its scheduled
// instants, however the spends fall. The share of spends followed within
// 100 ms by an IssueTokens is printed with the chance level.
func TestHostileServerRefillTiming(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	ctx := ctxT(t)
	dialTag := func(tag string) *protocol.Conn {
		c, err := protocol.Dial(ctx, h.Addr(tag), h.ClientOptions(t).Dial)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	acct, anon := dialTag("account"), dialTag("anon")
	var dev [16]byte
	rand.Read(dev[:])
	sess, err := acct.Register(ctx, "gina", []byte("password of gina"), dev, "gina")
	if err != nil {
		t.Fatal(err)
	}
	pin := h.Pin()
	v, err := kt.NewVerifier(pin.VKey, pin.VRFKey, pin.ConfigHash)
	if err != nil {
		t.Fatal(err)
	}
	opts := protocol.WalletOptions{Low: 5, Batch: 10, KT: v, Now: h.Clock.Now, RefillMean: time.Hour}
	path := filepath.Join(t.TempDir(), "wallet")
	w, err := protocol.OpenWallet(path, acct, sess, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Refill(ctx); err != nil {
		t.Fatal(err)
	}
	mb, err := anon.CreateMailbox(ctx, mustTake(t, w))
	if err != nil {
		t.Fatal(err)
	}
	send := func(i int) {
		if _, err := anon.Send(ctx, mb.SendID, protocol.NewMessageID(), make([]byte, 100+i%7), mustTake(t, w)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	// 1. Spend it all: nothing refills.
	for i := range 9 {
		send(i)
	}
	if _, err := w.Take(ctx); !errors.Is(err, protocol.ErrNoTokens) {
		t.Fatalf("take from the spent wallet: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	if n := issueRequests(h, "account"); n != 1 {
		t.Fatalf("%d IssueTokens requests, want only the first refill: spends started refills", n)
	}

	// 2. The schedule (mean 60 ms here) refills while spends run at
	// random instants (mean 40 ms apart).
	opts.RefillMean = 60 * time.Millisecond
	w, err = protocol.OpenWallet(path, acct, sess, opts)
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); w.RunRefills(rctx) }()
	var spends []time.Time
	for i := 0; len(spends) < 60; i++ {
		time.Sleep(time.Duration(-math.Log1p(-randFloat()) * float64(40*time.Millisecond)))
		if w.Len() == 0 {
			continue
		}
		spends = append(spends, time.Now())
		send(i)
	}
	stop()
	<-done
	scheduled := w.ScheduledRefills()
	var issues []time.Time
	for _, e := range h.Events() {
		if e.FromClient && e.Tag == "account" && e.Kind == wire.KindIssueTokens {
			issues = append(issues, e.Time)
		}
	}
	issues = issues[1:] // the first, explicit refill
	if len(issues) == 0 || len(scheduled) == 0 {
		t.Fatalf("%d IssueTokens requests, %d scheduled refills", len(issues), len(scheduled))
	}
	for _, at := range issues {
		ok := false
		for _, s := range scheduled {
			if d := at.Sub(s); d >= 0 && d < 500*time.Millisecond {
				ok = true
			}
		}
		if !ok {
			t.Fatalf("an IssueTokens at %v started at no scheduled instant %v", at, scheduled)
		}
	}
	// The server's view: spends followed by an IssueTokens within 100 ms.
	const window = 100 * time.Millisecond
	followed := 0
	for _, s := range spends {
		for _, at := range issues {
			if d := at.Sub(s); d >= 0 && d < window {
				followed++
				break
			}
		}
	}
	span := spends[len(spends)-1].Sub(spends[0])
	chance := 1 - math.Exp(-float64(len(issues))*float64(window)/float64(span))
	t.Logf("%d spends over %v, %d scheduled refills, %d IssueTokens; %d/%d spends followed within %v (chance %.2f)",
		len(spends), span.Round(time.Millisecond), len(scheduled), len(issues), followed, len(spends), window, chance)
}

func mustTake(t *testing.T, w *protocol.Wallet) []byte {
	t.Helper()
	tok, err := w.Take(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

func randFloat() float64 { return mrand.Float64() }

// registerRaw registers handle through the protocol layer alone, on a
// connection tagged handle, so that a test can publish a binding of its
// own making under it.
func registerRaw(t *testing.T, h *hostile.Server, handle string) (*protocol.Conn, *protocol.Session) {
	t.Helper()
	ctx := ctxT(t)
	conn, err := protocol.Dial(ctx, h.Addr(handle), h.ClientOptions(t).Dial)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var dev [16]byte
	rand.Read(dev[:])
	sess, err := conn.Register(ctx, handle, []byte("password of "+handle), dev, handle)
	if err != nil {
		t.Fatal(err)
	}
	return conn, sess
}

// publishBinding publishes b, signed already, under the session's handle
// and waits until the directory serves it.
func publishBinding(t *testing.T, h *hostile.Server, conn *protocol.Conn, sess *protocol.Session, b *kt.Binding) {
	t.Helper()
	if _, _, err := conn.KTPublish(ctxT(t), sess, protocol.NewKTOwner(b.Label), b); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if v, _ := h.KT().LatestVersion(b.Label); v > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's binding never published", b.Label)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
