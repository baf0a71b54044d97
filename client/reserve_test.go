package client

import (
	"bytes"
	"testing"

	"github.com/quicprochat/qpc/mls"
)

// TestAttackFloorOtherBranch plays a peer whose commit wins the fork
// choice (commitorder.go) over the one we followed, after a restart:
// the floor this process read from disk (reserve.go) names our epoch by
// its number, and the branch we switch to has an epoch of the same
// number with other keys, none of which a text of ours used. Before,
// the floor was applied there too: it skipped generations for nothing,
// and when we had sent more texts in our branch than MaxForwardDistance
// (1024) the skip failed, so that every load of the group failed
// (ErrCorruptState) and each envelope of the conversation was dropped
// unread until the next restart. The floor must still hold in the
// epoch it was taken in.
func TestAttackFloorOtherBranch(t *testing.T) {
	id, err := mls.NewBasicIdentity(DefaultSuite, []byte("alice"))
	if err != nil {
		t.Fatal(err)
	}
	base, err := mls.Create(id, &mls.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	load := func(raw []byte) *mls.Group {
		t.Helper()
		g, err := mls.UnmarshalGroup(raw, &mls.Config{})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	// Two commits on one epoch: ours (x) and the one that wins (y).
	x, y := load(raw), load(raw)
	for _, g := range []*mls.Group{x, y} {
		if _, err := g.Update(); err != nil {
			t.Fatal(err)
		}
	}
	if x.Epoch() != y.Epoch() || bytes.Equal(x.EpochAuthenticator(), y.EpochAuthenticator()) {
		t.Fatalf("want two branches of one epoch number: epochs %d and %d", x.Epoch(), y.Epoch())
	}
	// Our texts in x, more than a ratchet skips at once.
	for range 1100 {
		if _, err := x.Encrypt([]byte("text")); err != nil {
			t.Fatal(err)
		}
	}
	xRaw, err := x.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	stored := reserveFor(x) // as on disk with x's state
	conv := []byte("conversation")

	var f floors
	// The restart's first load, in x: skipped to the reservation.
	if skipped, err := f.apply(conv, stored, 0, load(xRaw)); err != nil || !skipped {
		t.Fatalf("first load in our branch: skipped %v, %v", skipped, err)
	}
	// The fork choice moves to y: loading it must work and leave its
	// ratchet as it is.
	next, err := y.NextSendGeneration()
	if err != nil {
		t.Fatal(err)
	}
	skipped, err := f.apply(conv, reserveFor(y), 0, y)
	if err != nil {
		t.Fatalf("loading the branch the fork choice took: %v", err)
	}
	if now, _ := y.NextSendGeneration(); skipped || now != next {
		t.Errorf("the other branch's ratchet was skipped from %d to %d", next, now)
	}
	// Our branch's state, read again, is still held to the floor.
	again := load(xRaw)
	if skipped, err := f.apply(conv, stored, 0, again); err != nil || !skipped {
		t.Fatalf("our branch again: skipped %v, %v", skipped, err)
	}
	if now, _ := again.NextSendGeneration(); now != stored.Gen {
		t.Errorf("our branch's next generation %d, want the floor %d", now, stored.Gen)
	}

	// A floor raised after a failed transaction holds in its epoch only.
	var r floors
	r.raise(conv, &sendReserve{Epoch: x.Epoch(), Gen: 1101}, x.EpochAuthenticator())
	y2 := load(raw)
	if _, err := y2.Update(); err != nil {
		t.Fatal(err)
	}
	if skipped, err := r.apply(conv, nil, 0, y2); err != nil || skipped {
		t.Errorf("a raised floor applied to another branch: skipped %v, %v", skipped, err)
	}
	if skipped, err := r.apply(conv, nil, 0, load(xRaw)); err != nil || !skipped {
		t.Errorf("a raised floor in its own branch: skipped %v, %v", skipped, err)
	}
}
