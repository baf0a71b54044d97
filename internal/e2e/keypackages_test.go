package e2e

import (
	"slices"
	"strings"
	"testing"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/client/protocol"
)

// oneTimeKPs is how many one-time KeyPackages c keeps private keys for.
func oneTimeKPs(t *testing.T, c *client.Client) int {
	t.Helper()
	st, err := c.Status(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return st.OneTimeKeyPackages
}

// TestOneTimeKeyPackages: registering fills the server's pool with the
// device's one-time KeyPackages; each conversation someone starts with the
// user takes one of them out of the pool, and the Welcome sealed to it
// opens with its private keys, which are then deleted (used once). Direct
// chats and groups both; the messages arrive.
func TestOneTimeKeyPackages(t *testing.T) {
	ms := startMessengerServer(t)
	ctx := ctxT(t)
	alice, bob, carol := newUser(t, ms, "alice"), newUser(t, ms, "bob"), newUser(t, ms, "carol")
	for _, c := range []*client.Client{alice, bob, carol} {
		if n := oneTimeKPs(t, c); n != 20 {
			t.Fatalf("%s holds %d one-time key packages after registering, want 20", c.Handle(), n)
		}
	}
	if err := alice.Send(ctx, "bob", "hi bob"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, bob); !slices.Equal(got, []string{"alice: hi bob"}) {
		t.Fatalf("bob got %q", got)
	}
	if n := oneTimeKPs(t, bob); n != 19 {
		t.Fatalf("bob holds %d one-time key packages after alice's welcome, want 19 (one used and deleted)", n)
	}
	if err := carol.Send(ctx, "bob", "hi from carol"); err != nil {
		t.Fatal(err)
	}
	texts(t, bob)
	addContacts(t, ctx, "alice", bob, carol)
	if err := alice.CreateGroup(ctx, "team", []string{"bob", "carol"}); err != nil {
		t.Fatal(err)
	}
	texts(t, bob)
	texts(t, carol)
	if n := oneTimeKPs(t, bob); n != 17 {
		t.Errorf("bob holds %d one-time key packages after three welcomes, want 17", n)
	}
	if n := oneTimeKPs(t, carol); n != 19 {
		t.Errorf("carol holds %d one-time key packages after one welcome, want 19", n)
	}
	if err := carol.Send(ctx, "#team", "hello team"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{alice, bob} {
		if got := texts(t, c); !slices.ContainsFunc(got, func(s string) bool { return strings.HasSuffix(s, "hello team") }) {
			t.Fatalf("%s got %q in the group", c.Handle(), got)
		}
	}
}

// TestAttackDrainKeyPackagePool: when bob's pool is empty (here drained by
// mallory, who has tokens of her own), alice adds him with the
// last-resort KeyPackage from key transparency and the conversation works;
// the Welcome to the last-resort KeyPackage makes bob's client top the
// pool up again.
func TestAttackDrainKeyPackagePool(t *testing.T) {
	ms := startMessengerServer(t)
	ctx := ctxT(t)
	alice, bob := newUser(t, ms, "alice"), newUser(t, ms, "bob")
	acct, anon := dial(t, ms.testServer, protocol.Options{}), dial(t, ms.testServer, protocol.Options{})
	sess := registered(t, acct, "mallory")
	toks := wallet(t, acct, sess, 21)
	drained := 0
	for _, tok := range toks {
		kp, err := anon.FetchKeyPackage(ctx, "bob", tok)
		if err != nil {
			t.Fatal(err)
		}
		if kp == nil {
			break
		}
		drained++
	}
	if drained != 20 {
		t.Fatalf("drained %d of bob's key packages, want 20", drained)
	}
	if err := alice.Send(ctx, "bob", "hi bob"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, bob); !slices.Equal(got, []string{"alice: hi bob"}) {
		t.Fatalf("bob got %q", got)
	}
	// Bob still holds the 20 private keys mallory's fetches left unused
	// (until they expire) and 20 new ones for the refilled pool.
	if n := oneTimeKPs(t, bob); n != 40 {
		t.Fatalf("bob holds %d one-time key packages, want 40 (20 drained, 20 refilled)", n)
	}
	if err := bob.Send(ctx, "alice", "hi alice"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, alice); !slices.Equal(got, []string{"bob: hi alice"}) {
		t.Fatalf("alice got %q", got)
	}
}
