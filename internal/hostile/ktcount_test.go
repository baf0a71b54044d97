package hostile_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/wire"
)

// Review PoCs (h-rev-kt), now the tests of their fixes: each asserts a
// promise of docs/threat-model.md and failed while it was broken.

// The server keeps the owner's check from completing in a way the client
// once filed as "this side's failure" (client/status.go serverCaused), so
// the count never grew and no kt-unverified alarm ever came, while
// everything else the user does works. The promise
// (docs/key-transparency.md §4 "Checks the server does not let finish"):
// past CheckAttempts failures over CheckGrace the check is a kt-unverified
// alarm.

// TestHostileOwnerCheckStalled: the history request is never answered (the
// stream is held open, nothing written) while Health is answered at once.
// The check runs under the caller's deadline (`qpc kt check` uses
// --timeout, 2 minutes by default, shorter than RequestTimeout ×
// MaxAttempts = 6 × 30 s), so it used to end with the caller's context
// expired, which counts for nothing. Its requests now end before the
// caller's deadline, as a timeout of the check's own, with time left to
// tell who caused it.
func TestHostileOwnerCheckStalled(t *testing.T) {
	ownerCheckWithheld(t, 1500*time.Millisecond, func(x *hostile.Exchange, release <-chan struct{}) {
		if _, ok := x.Request.(*wire.KTHistory); ok {
			select { // hold the answer until the test ends (at most 20 s)
			case <-release:
			case <-time.After(20 * time.Second):
			}
			x.Drop = true
		}
	})
}

// TestHostileOwnerCheckHealthWithheld: the history answer is dropped (the
// stream ends empty: a transport error) and so is every Health answer to
// this user, the probe included (a Health on a fresh connection, the old
// one was dropped after the transport error), so the probe "fails" and the
// failure used to be filed as no network. Nothing else uses Health; `qpc
// status` showed "unreachable" while sends and syncs worked. Now any other
// answer to this client (a hello, another request, on any connection)
// around the failure makes it the server's.
func TestHostileOwnerCheckHealthWithheld(t *testing.T) {
	ownerCheckWithheld(t, 20*time.Second, func(x *hostile.Exchange, _ <-chan struct{}) {
		switch x.Request.(type) {
		case *wire.KTHistory, *wire.Health:
			x.Drop = true
		}
	})
}

// ownerCheckWithheld runs CheckAttempts owner checks over CheckGrace, each
// under a caller's deadline of timeout, while the server withholds answers
// to alice as withhold says, and asserts the kt-unverified alarm.
func ownerCheckWithheld(t *testing.T, timeout time.Duration, withhold func(x *hostile.Exchange, release <-chan struct{})) {
	h := hostile.Start(t, hostile.Options{})
	alice, _, clk := clockedUser(t, h, "alice", "alice")
	ctx := ctxT(t)
	if alarms, err := alice.KTCheck(ctx); err != nil || len(alarms) != 0 {
		t.Fatalf("honest owner check: %v %v", alarms, err)
	}
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	var on atomic.Bool
	on.Store(true)
	h.Rewrite(func(x *hostile.Exchange) {
		if on.Load() && x.Tag == "alice" {
			withhold(x, release)
		}
	})
	for i := range client.CheckAttempts {
		// The caller's deadline, as `qpc kt check --timeout` sets it.
		cctx, cancel := context.WithTimeout(ctx, timeout)
		_, err := alice.KTCheck(cctx)
		cancel()
		if err == nil {
			t.Fatalf("check %d succeeded", i)
		}
		t.Logf("check %d: %v", i, err)
		if i < client.CheckAttempts-1 {
			clk.Advance(client.CheckGrace / 2)
		}
	}
	// Everything else works meanwhile: alice adds a contact.
	h.NewUser(t, "bob", "bob")
	if _, err := alice.AddContact(ctx, "bob"); err != nil {
		t.Fatalf("the server is reachable for everything else, yet: %v", err)
	}
	on.Store(false)
	st, err := alice.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("owner check status: %+v", st.OwnerCheck)
	if n := len(alarmsOf(t, alice, client.AlarmKTUnverified)); n == 0 {
		t.Fatalf("the server withheld %d owner checks over %v: %d failures counted, no kt-unverified alarm",
			client.CheckAttempts, client.CheckGrace, st.OwnerCheck.Failures)
	}
	if st.OwnerCheck.LastErrorUncounted {
		t.Fatalf("the last withheld check is shown as no network: %+v", st.OwnerCheck)
	}
}

// TestHostileTokenEpochLength: the wallet trusted the token epoch
// length on first use (client/wallet.go Key: "the first one seen is
// remembered"). From a new user's first contact, the server announces
// epochs of two hours instead of its one hour, so the user's "current"
// epoch is EpochAt(now, 2h), an epoch number every other client passed
// decades ago and never looks up again. The server commits a key of its
// own under that epoch's label, as version 1, so the KT check passes, the
// clock check passes (under the announced length), and the user's own
// binding then commits to it without alarming anyone (the commitment
// check only flags epochs after the clock's next one). Every token the
// user spends is under a key only the user was shown. The promise
// (docs/threat-model.md, token keys cannot tag a user): no IssueTokens
// under a key not committed for everyone, or a token-key alarm. The
// length is now committed in key transparency (kt.TokenEpochLabel) and
// checked before any key is taken.
func TestHostileTokenEpochLength(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	const ownLen = 2 * hostile.TokenEpoch
	secret := make([]byte, tokens.MasterSecretSize)
	rand.Read(secret)
	iss, err := tokens.NewIssuer(secret, tokens.WithEpochLength(ownLen), tokens.WithClock(h.Clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	epoch := iss.Epoch()
	pk, err := iss.PublicKey(epoch)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := pk.MarshalBinary()
	if _, err := h.KT().Publish(ctxT(t), kt.TokenKeyLabel(epoch), raw); err != nil {
		t.Fatal(err)
	}
	var shown atomic.Int32
	h.Rewrite(func(x *hostile.Exchange) {
		if _, ok := x.Response.(*wire.TokenKeyList); ok && x.Tag == "target" {
			shown.Add(1)
			x.Response = &wire.TokenKeyList{Current: epoch, EpochSeconds: uint32(ownLen / time.Second),
				Keys: []wire.EpochKey{{Epoch: epoch, Key: raw}}}
		}
	})
	target, _ := initUser(t, h, "target")
	regErr := target.Register(ctxT(t), "target", []byte("password of target"))
	t.Logf("register: %v (the honest issuer refuses the key; a lying one would sign)", regErr)
	if shown.Load() == 0 {
		t.Fatal("the rewrite never ran")
	}
	n := issueRequests(h, "target")
	al := tokenAlarms(t, target)
	if n > 0 && len(al) == 0 {
		t.Fatalf("%d IssueTokens requests under the key of epoch %d (epochs of %v, announced to this user only; the server's are %v) and no token-key alarm",
			n, epoch, ownLen, hostile.TokenEpoch)
	}
}

// TestHostileGossipHealthWithheld: the same bypass against checkpoint
// gossip (client/gossip.go keepGossip → serverCaused): the server drops
// bob's consistency answers and every Health answer to bob, so the
// checkpoint alice gossips is never compared and every failure used to be
// filed as no network. Bob's syncs work, so the failures count, and the
// kept checkpoint becomes the kt-unverified alarm the promise
// (docs/key-transparency.md §4, gossip) says it becomes past
// CheckAttempts over CheckGrace.
func TestHostileGossipHealthWithheld(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	alice, bob, _, clk := gossipSetup(t, h)
	h.Rewrite(func(x *hostile.Exchange) {
		if x.Tag != "bob" {
			return
		}
		switch x.Request.(type) {
		case *wire.KTConsistency, *wire.Health:
			x.Drop = true
		}
	})
	ctx := ctxT(t)
	if err := alice.Send(ctx, "bob", "a checkpoint bob cannot check"); err != nil {
		t.Fatal(err)
	}
	var alarms []client.Alarm
	for i := range client.CheckAttempts {
		alarms = append(alarms, syncAlarms(t, bob)...)
		if i < client.CheckAttempts-1 {
			clk.Advance(client.CheckGrace / 2)
		}
	}
	st, err := bob.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bob: %d checkpoints kept since %v, alarms %v", st.GossipPending, st.GossipPendingSince, alarms)
	if len(alarmsOf(t, bob, client.AlarmKTUnverified)) == 0 {
		t.Fatalf("alice's checkpoint was never compared over %d syncs and %v, and no kt-unverified alarm", client.CheckAttempts, client.CheckGrace)
	}
}

// TestHostileTokenEpochLengthRewritten: the server commits a second
// version of its token epoch length (two hours), as it would to move
// everyone's epochs, or some users', after the fact. A new user shown the
// honest length still refuses every key: the committed length may have
// one version only. A token-key alarm, and no IssueTokens.
func TestHostileTokenEpochLengthRewritten(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	if _, err := h.KT().Publish(ctxT(t), kt.TokenEpochLabel, kt.TokenEpochValue(2*hostile.TokenEpoch)); err != nil {
		t.Fatal(err)
	}
	target, _ := initUser(t, h, "target")
	if err := target.Register(ctxT(t), "target", []byte("password of target")); err == nil {
		t.Fatal("registered with a token epoch length committed twice")
	}
	if n := issueRequests(h, "target"); n != 0 {
		t.Fatalf("%d IssueTokens requests under a rewritten epoch length", n)
	}
	al := tokenAlarms(t, target)
	if len(al) == 0 || !strings.Contains(al[0].Detail, "2 versions") {
		t.Fatalf("alarms %+v, want one for the second version of the epoch length", al)
	}
}

// TestHostileBindingTokenEpochBeforeFloor: bob's binding commits to the
// token key of an epoch the server numbered with epochs twice as long
// (EpochAt(now, 2 h), an epoch of about 1998 under the real length), a
// key the server committed for that epoch, so the committed-key
// comparison passes: what a wallet that took the length on first use
// would publish. Alice's lookup raises a token-key alarm: no qpc epoch
// began that early.
func TestHostileBindingTokenEpochBeforeFloor(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	alice := h.NewUser(t, "alice", "alice")
	ctx := ctxT(t)
	conn, sess := registerRaw(t, h, "bob")
	secret := make([]byte, tokens.MasterSecretSize)
	rand.Read(secret)
	iss, err := tokens.NewIssuer(secret, tokens.WithEpochLength(2*hostile.TokenEpoch), tokens.WithClock(h.Clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	old := iss.Epoch()
	pk, err := iss.PublicKey(old)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := pk.MarshalBinary()
	if _, err := h.KT().Publish(ctx, kt.TokenKeyLabel(old), raw); err != nil {
		t.Fatal(err)
	}
	_, idKey, _ := ed25519.GenerateKey(rand.Reader)
	b := &kt.Binding{
		Label: "bob", IdentityKeys: []ed25519.PublicKey{idKey.Public().(ed25519.PublicKey)},
		IntroKey:  make([]byte, 1216),
		TokenKeys: []kt.TokenKeyCommitment{{Epoch: old, Hash: sha256Sum(raw)}},
	}
	if err := b.Sign(idKey); err != nil {
		t.Fatal(err)
	}
	publishBinding(t, h, conn, sess, b)
	if _, err := alice.AddContact(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	al := tokenAlarms(t, alice)
	if len(al) != 1 || !strings.Contains(al[0].Detail, "before any qpc server issued tokens") {
		t.Fatalf("alarms %+v, want one about bob's commitment to epoch %d", al, old)
	}
}
