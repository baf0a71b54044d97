package pglog_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicprochat/qpc/internal/litewitness"
	"github.com/quicprochat/qpc/internal/pgtest"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/ktpg/pglog"
	"github.com/quicprochat/qpc/kt/kttest"
)

// counting counts the requests a node's publisher sends to witnesses.
type counting struct{ n atomic.Int64 }

func (c *counting) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultTransport.RoundTrip(r)
}

// TestAttackFencedPublisherIsSilent plays a former sequencer under a
// witness policy that lost its lease while it kept running: its checkpoint
// publisher, which republishes every second, must neither ask the
// witnesses to cosign (it would spend their attention and could race the
// new holder's requests) nor store a checkpoint over the new holder's;
// its appends are fenced off. The new holder's checkpoint, cosigned by a
// real witness (litewitness), stays the published one.
func TestAttackFencedPublisherIsSilent(t *testing.T) {
	ctx := context.Background()
	w := litewitness.Start(t, "witness.test/a")
	k := kttest.NewKeys(t, "pglog.example/fenced")
	signer, nv := k.Signer, k.Verifier
	w.AddLog(t, signer.Name(), k.VKey)
	policy, err := kt.ParseWitnessPolicy(litewitness.Policy(1, w))
	if err != nil {
		t.Fatal(err)
	}
	url := pgtest.DB(t)
	p := pool(t, url)
	fenceFor := tokenLease(t, p)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	node := func(token int64, hc *counting) *pglog.Log {
		c := kt.LogConfig{Signer: signer, Witnesses: policy, WitnessTimeout: 5 * time.Second,
			HTTPClient: &http.Client{Transport: hc}}
		l, err := pglog.Open(ctx, pool(t, url), c, pglog.Options{Fence: fenceFor(token), Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	// cosigned waits for a published checkpoint of size entries that
	// satisfies the policy.
	cosigned := func(l *pglog.Log, size uint64) []byte {
		t.Helper()
		for end := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			raw, err := l.ReadCheckpoint(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if cp, err := kt.OpenCheckpoint(raw, nv); err == nil && cp.Size == size && policy.Satisfied(raw) {
				return raw
			}
			if time.Now().After(end) {
				t.Fatalf("no cosigned checkpoint of %d entries", size)
			}
		}
	}
	var oldReqs, newReqs counting
	old := node(1, &oldReqs)
	for i := range 2 {
		if _, err := old.Append(ctx, entryOf(i)); err != nil {
			t.Fatal(err)
		}
	}
	cosigned(old, 2)
	if oldReqs.n.Load() == 0 {
		t.Fatal("the holder's publisher asked no witness")
	}

	// The takeover.
	if _, err := p.Exec(ctx, `UPDATE lease SET token = 2 WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	newer := node(2, &newReqs)
	if _, err := newer.Append(ctx, entryOf(2)); err != nil {
		t.Fatal(err)
	}
	cosigned(newer, 3)
	before := oldReqs.n.Load()
	// The new holder republishes every second; two of its rounds give
	// the old publisher, on the same period, at least one of its own.
	mark := newReqs.n.Load()
	for end := time.Now().Add(30 * time.Second); newReqs.n.Load() < mark+2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the new holder republished %d times in 30 s", newReqs.n.Load()-mark)
		}
	}
	if got := oldReqs.n.Load(); got != before {
		t.Fatalf("the fenced-off publisher sent %d witness requests after the takeover", got-before)
	}
	if _, err := old.Append(ctx, []byte("forked epoch")); !errors.Is(err, pglog.ErrFenced) {
		t.Fatalf("the former holder's append: %v, want ErrFenced", err)
	}
	raw, err := old.ReadCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := kt.OpenCheckpoint(raw, nv)
	if err != nil || cp.Size != 3 || !policy.Satisfied(raw) {
		t.Fatalf("published checkpoint after the takeover: %v, %v; want the new holder's of 3 entries, cosigned", cp, err)
	}
}
