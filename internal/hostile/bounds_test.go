package hostile_test

import (
	"crypto/rand"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/wire"
)

// TestAttackFetchFlood: a server answering bob's Fetch with far more
// Delivery records than he asked for (x.Extra before the FetchEnd) makes
// his fetch fail clearly at the first record past his limit: he holds at
// most the limit, not whatever the server sends. Once the server stops,
// nothing was lost.
func TestAttackFetchFlood(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	alice, bob := pair(t, h)
	var flooding atomic.Bool
	var flooded atomic.Int64
	flooding.Store(true)
	h.Rewrite(func(x *hostile.Exchange) {
		f, ok := x.Request.(*wire.Fetch)
		if _, end := x.Response.(*wire.FetchEnd); !ok || !end || x.Tag != "bob" || !flooding.Load() {
			return
		}
		extra := make([]wire.Message, 0, int(f.Limit)+101)
		for i := range int(f.Limit) + 100 {
			d := &wire.Delivery{Seq: f.After + uint64(i) + 1, Envelope: make([]byte, 1000)}
			rand.Read(d.MessageID[:])
			rand.Read(d.Envelope)
			extra = append(extra, d)
		}
		x.Response, x.Extra = extra[0], append(extra[1:], x.Response)
		flooded.Add(1)
	})
	_, err := bob.Sync(ctxT(t))
	if flooded.Load() == 0 {
		t.Fatal("bob fetched nothing")
	}
	if err == nil || !strings.Contains(err.Error(), "more than the") {
		t.Fatalf("bob's sync under a flood of deliveries: %v, want a clear refusal", err)
	}
	flooding.Store(false)
	if err := alice.Send(ctxT(t), "bob", "after the flood"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, bob); len(got) != 1 || got[0] != "alice: after the flood" {
		t.Fatalf("bob got %q", got)
	}
}
