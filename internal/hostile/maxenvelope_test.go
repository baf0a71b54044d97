package hostile_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/sealed"
	"github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/wire"
)

// TestHostileMaxEnvelope plays a server that announces, to one victim
// only, a max_envelope just large enough for the smallest envelope bucket.
// Were the client to take it, it would cut every longer text into chunks
// of that bucket, and the number of Send records would tell a text's
// length to within about 700 bytes. The limit is pinned with the buckets:
// the victim refuses the server (ErrPolicy) and sends nothing, while an
// honest user's 3,000- and 6,000-byte texts are one 16 KiB record each.
func TestHostileMaxEnvelope(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	pp, err := sealed.PlaintextPolicy(h.Policy(), tokens.TokenSize)
	if err != nil {
		t.Fatal(err)
	}
	small := uint32(pp.Buckets()[0] + sealed.Overhead)
	h.Rewrite(func(x *hostile.Exchange) {
		if hello, ok := x.Response.(*wire.ServerHello); ok && x.Tag == "victim" {
			lied := *hello
			lied.Limits.MaxEnvelope = small
			x.Response = &lied
		}
	})
	ctx := ctxT(t)
	if _, err := client.Init(ctx, h.Addr("victim"), h.Pin(), h.ClientOptions(t)); !errors.Is(err, protocol.ErrPolicy) {
		t.Fatalf("init against a server announcing max_envelope %d: %v, want ErrPolicy", small, err)
	}
	for _, e := range h.Events() {
		if e.FromClient && e.Tag == "victim" && e.Kind != wire.KindClientHello {
			t.Fatalf("the victim sent a %#x record to a server it should have refused", uint8(e.Kind))
		}
	}

	alice, bob := pair(t, h)
	shape := func(n int) []int {
		t.Helper()
		start := time.Now()
		if err := alice.Send(ctx, "bob", strings.Repeat("x", n)); err != nil {
			t.Fatal(err)
		}
		if got := texts(t, bob); len(got) != 1 || len(got[0]) != len("alice: ")+n {
			t.Fatalf("bob got %d texts", len(got))
		}
		var sizes []int
		for _, e := range h.Events() {
			if e.FromClient && e.Tag == "alice" && e.Kind == wire.KindSend && e.Time.After(start) {
				sizes = append(sizes, e.Size)
			}
		}
		return sizes
	}
	s1, s2 := shape(3000), shape(6000)
	if len(s1) != 1 || len(s2) != 1 || s1[0] != s2[0] {
		t.Fatalf("a 3,000-byte text went as records %v, a 6,000-byte one as %v: want one record of one size each", s1, s2)
	}
}
