package hostile_test

import (
	"slices"
	"sync/atomic"
	"testing"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/wire"
)

// TestHostileForgedKeyPackage: asked for bob's one-time KeyPackage, the
// server hands out one that is not bob's — a real KeyPackage of mallory,
// whose keys the server can have — for a direct chat and for a group.
// Alice checks it against bob's key-transparency record, refuses it and
// falls back to bob's last-resort KeyPackage: bob joins, mallory never
// does.
func TestHostileForgedKeyPackage(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	mallory := h.NewUser(t, "mallory", "mallory")
	var malloryKPs [][]byte
	for _, e := range h.Events() {
		if u, ok := e.Message.(*wire.UploadKeyPackages); ok && e.Tag == "mallory" {
			malloryKPs = append(malloryKPs, u.KeyPackages...)
		}
	}
	if len(malloryKPs) < 2 {
		t.Fatalf("mallory uploaded %d KeyPackages", len(malloryKPs))
	}
	alice, bob, carol := h.NewUser(t, "alice", "alice"), h.NewUser(t, "bob", "bob"), h.NewUser(t, "carol", "carol")
	var forged atomic.Int32
	h.Rewrite(func(x *hostile.Exchange) {
		q, ok := x.Request.(*wire.FetchKeyPackage)
		if !ok || x.Tag != "alice" || q.Handle == "mallory" {
			return
		}
		n := forged.Add(1)
		x.Response = &wire.KeyPackageReply{KeyPackage: malloryKPs[int(n)%len(malloryKPs)]}
	})
	ctx := ctxT(t)
	if err := alice.Send(ctx, "bob", "hi bob"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, bob); !slices.Equal(got, []string{"alice: hi bob"}) {
		t.Fatalf("bob got %q", got)
	}
	addContacts(t, ctx, "alice", carol)
	if err := alice.CreateGroup(ctx, "friends", []string{"carol"}); err != nil {
		t.Fatal(err)
	}
	if err := alice.Send(ctx, "#friends", "hi friends"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, carol); !slices.Equal(got, []string{"alice: hi friends"}) {
		t.Fatalf("carol got %q", got)
	}
	if forged.Load() < 2 {
		t.Fatalf("the server forged %d KeyPackages", forged.Load())
	}
	ev, err := mallory.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ev {
		if e.Kind == client.EventJoined || e.Kind == client.EventMessage {
			t.Fatalf("mallory: %s %q %q", e.Kind, e.Conv, e.Text)
		}
	}
}

// TestHostileWithholdsKeyPackages: a server that says every pool is empty
// (or a stranger who drained it, see TestAttackDrainKeyPackagePool in
// internal/e2e) only costs the Welcome its one-time key: first contact
// still works through the last-resort KeyPackage in key transparency.
func TestHostileWithholdsKeyPackages(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	var withheld atomic.Int32
	h.Rewrite(func(x *hostile.Exchange) {
		if _, ok := x.Response.(*wire.KeyPackageReply); ok {
			x.Response = &wire.KeyPackageReply{}
			withheld.Add(1)
		}
	})
	alice, bob := pair(t, h)
	if withheld.Load() == 0 {
		t.Fatal("the server withheld nothing")
	}
	if err := bob.Send(ctxT(t), "alice", "still here"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, alice); !slices.Equal(got, []string{"bob: still here"}) {
		t.Fatalf("alice got %q", got)
	}
}
