package client

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/kt"
	"golang.org/x/mod/sumdb/note"
)

// gossipClient is a Client with a local state, a verifier pinned to a
// fresh log key whose signer the test holds, and a clock the test sets;
// nothing in these tests reaches a server.
func gossipClient(t *testing.T) (*Client, func(size uint64, root byte) []byte, *time.Time) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, "qpc-kt-test")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := kt.NewVerifier(vkey, make([]byte, 32), [32]byte{1})
	if err != nil {
		t.Fatal(err)
	}
	st, err := state.Create(t.TempDir(), []byte("pass"), &state.Options{Time: 1, MemoryKiB: 64, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	c := newClient(st, Options{Now: func() time.Time { return now }, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	c.v, c.prof = v, &profile{}
	t.Cleanup(func() { st.Close() })
	sign := func(size uint64, root byte) []byte {
		var r [32]byte
		r[0] = root
		text := fmt.Sprintf("qpc-kt-test\n%d\n%s\n", size, base64.StdEncoding.EncodeToString(r[:]))
		raw, err := note.Sign(&note.Note{Text: text}, signer)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	return c, sign, &now
}

func (c *Client) storedAlarms(t *testing.T) []Alarm {
	t.Helper()
	a, err := c.Alarms()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestGossipSplitAmongKept: two contacts relay checkpoints of one size
// with different roots while neither can be compared with ours: the log
// key signed both, so it is a split view at once, before any request.
func TestGossipSplitAmongKept(t *testing.T) {
	c, sign, _ := gossipClient(t)
	first := sign(40, 1)
	cp, err := c.openCheckpoint(first)
	if err != nil {
		t.Fatal(err)
	}
	c.keepGossip(context.Background(), nil, pendingGossip{From: "alice", Checkpoint: first}, cp, errLater, time.Now())
	c.gossip(context.Background(), "carol", sign(40, 2))
	a := c.storedAlarms(t)
	if len(a) != 1 || a[0].Kind != AlarmSplitView || len(a[0].Evidence) != 2 || !strings.Contains(a[0].Detail, "alice and carol") {
		t.Fatalf("alarms %+v", a)
	}
}

// TestKeepGossip: one checkpoint kept per contact, the larger standing
// for both, with the count and start carried over; the bound makes it an
// alarm and forgets it; a full list alarms rather than drop silently.
func TestKeepGossip(t *testing.T) {
	c, sign, now := gossipClient(t)
	ctx := context.Background()
	keep := func(from string, size uint64) {
		t.Helper()
		raw := sign(size, 1)
		cp, err := c.openCheckpoint(raw)
		if err != nil {
			t.Fatal(err)
		}
		if !c.keepGossip(ctx, nil, pendingGossip{From: from, Checkpoint: raw}, cp, errLater, time.Now()) {
			t.Fatal("a log kept smaller than the contact's did not count")
		}
	}
	start := *now
	keep("alice", 10)
	*now = now.Add(time.Minute)
	keep("alice", 12)
	keep("alice", 11) // older than the kept one: the larger stays
	if n := len(c.prof.PendingGossip); n != 1 {
		t.Fatalf("%d kept for one contact", n)
	}
	g := c.prof.PendingGossip[0]
	if cp, _ := c.openCheckpoint(g.Checkpoint); cp.Size != 12 || g.Attempts != 3 || !g.Since.Equal(start) {
		t.Fatalf("kept %d, %d attempts since %v", cp.Size, g.Attempts, g.Since)
	}
	if len(c.storedAlarms(t)) != 0 {
		t.Fatal("alarm before the grace")
	}
	*now = start.Add(CheckGrace)
	keep("alice", 12)
	if a := c.storedAlarms(t); len(a) != 1 || a[0].Kind != AlarmKTUnverified || len(c.prof.PendingGossip) != 0 {
		t.Fatalf("past the bound: alarms %+v, %d kept", a, len(c.prof.PendingGossip))
	}
	// A contact whose checkpoint then compares forgets the kept one.
	keep("bob", 20)
	c.concluded("bob", 25)
	if len(c.prof.PendingGossip) != 0 {
		t.Fatal("a compared contact's older checkpoint is still kept")
	}
	// Full: the next contact's checkpoint is an alarm with its evidence.
	for i := range maxPendingGossip {
		keep(fmt.Sprintf("u%d", i), 100)
	}
	keep("one-more", 100)
	a := c.storedAlarms(t)
	if len(c.prof.PendingGossip) != maxPendingGossip || len(a) != 2 || a[1].Kind != AlarmKTUnverified || !strings.Contains(a[1].Detail, "one-more") || len(a[1].Evidence) == 0 {
		t.Fatalf("at the bound: %d kept, alarms %+v", len(c.prof.PendingGossip), a)
	}
}

// TestOwnerCheckBound: failures on this side do not count; the server's
// count up to CheckAttempts over CheckGrace, alarm once per run.
func TestOwnerCheckBound(t *testing.T) {
	var o ownerCheck
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	boom := fmt.Errorf("x")
	if o.failed(t0, boom, false) || o.Failures != 0 || o.LastError != "x" {
		t.Fatalf("a local failure counted: %+v", o)
	}
	for i := range CheckAttempts + 2 {
		at := t0.Add(time.Duration(i) * CheckGrace / 2)
		want := i == CheckAttempts-1 // the third, at CheckGrace
		if got := o.failed(at, boom, true); got != want {
			t.Fatalf("failure %d at %v: alarm %v, want %v", i+1, at.Sub(t0), got, want)
		}
	}
	o = ownerCheck{}
	for i := range CheckAttempts * 3 {
		if o.failed(t0.Add(time.Duration(i)*time.Second), boom, true) {
			t.Fatal("alarm within the grace")
		}
	}
}
