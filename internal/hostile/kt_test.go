package hostile_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/wire"
)

// answerFromKT makes the server answer the key-transparency requests of
// connections tagged tag from d instead of its honest directory.
func answerFromKT(t *testing.T, h *hostile.Server, tag string, d *kt.Directory) {
	h.Rewrite(func(x *hostile.Exchange) {
		if x.Tag != tag {
			return
		}
		var raw []byte
		var err error
		switch q := x.Request.(type) {
		case *wire.KTLookup:
			var p *kt.LookupProof
			if p, err = d.Lookup(context.Background(), q.Label, q.KnownSize); err == nil {
				raw = p.Marshal()
			}
		case *wire.KTHistory:
			var p *kt.HistoryProof
			if p, err = d.History(context.Background(), q.Label, q.Since, q.KnownSize); err == nil {
				raw = p.Marshal()
			}
		case *wire.KTConsistency:
			var p *kt.ConsistencyProof
			if p, err = d.Consistency(context.Background(), q.Old); err == nil {
				raw = p.Marshal()
			}
		default:
			return
		}
		if err != nil {
			t.Errorf("answering from the other directory: %v", err)
			return
		}
		x.Response = &wire.KTProof{Proof: raw}
	})
}

// TestHostileKTFrozenView: the server answers one user's lookups from a
// copy of its directory that stopped at one epoch (consistent with
// everything the user saw, so no rollback and no split view): a key
// change made after it would stay hidden from that user for as long as
// the server likes. Before: the answers verified forever. Now: once the
// frozen epoch is older than the client's bound (KTMaxEpochAge), lookups
// are refused as stale.
func TestHostileKTFrozenView(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	h.NewUser(t, "bob", "bob")
	opts := h.ClientOptions(t)
	opts.KTMaxEpochAge = 2 * time.Second
	alice := h.NewUserWith(t, "alice", "alice", opts)
	ctx := ctxT(t)

	frozen := h.ForkKT(t) // no epoch loop: its newest epoch stays as it is now
	answerFromKT(t, h, "alice", frozen)
	if _, err := alice.AddContact(ctx, "bob"); err != nil {
		t.Fatalf("a fresh answer from the copy: %v", err)
	}
	time.Sleep(opts.KTMaxEpochAge + 500*time.Millisecond)
	_, err := alice.AddContact(ctx, "bob")
	if !errors.Is(err, kt.ErrStale) {
		t.Fatalf("a lookup under an epoch %v old: %v", opts.KTMaxEpochAge, err)
	}
}

// TestHostileKTPublishVersion: the server answers the owner's publish with
// a version past the next one (it has put versions of its own in
// between, as in the attack review's rogue v2 and back-dated v4). Before:
// the owner recorded whatever version it was told. Now: the answer is an
// alarm, and the owner's state keeps the publish pending without that
// version.
func TestHostileKTPublishVersion(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	h.Rewrite(func(x *hostile.Exchange) {
		if p, ok := x.Response.(*wire.KTPublished); ok && x.Tag == "alice" {
			x.Response = &wire.KTPublished{Version: p.Version + 2, Epoch: p.Epoch}
		}
	})
	ctx := ctxT(t)
	alice, err := client.Init(ctx, h.Addr("alice"), h.Pin(), h.ClientOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	err = alice.Register(ctx, "alice", []byte("password of alice"))
	var verr *protocol.KTVersionError
	if !errors.As(err, &verr) || verr.Alarm.Version != 3 {
		t.Fatalf("register with the publish answered as version 3: %v", err)
	}
	alarms, err := alice.Alarms()
	if err != nil {
		t.Fatal(err)
	}
	if len(alarms) != 1 || alarms[0].Kind != client.AlarmKT || !strings.Contains(alarms[0].Detail, "version 3") {
		t.Fatalf("alarms: %+v", alarms)
	}
}
