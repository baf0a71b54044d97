//go:build knowngap

// A known gap, kept as the proof that shows it: this test FAILS today and
// is built only with -tags knowngap (go test -tags knowngap -run
// TestBreakAlternatingMaps ./kt/), so that the README's test command stays
// green while docs/key-transparency.md §5 states the gap. The witness and
// auditor work must make it pass and drop the tag.

package kt

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"golang.org/x/mod/sumdb/note"
)

// Review proof of concept: it asserts a promise of docs/threat-model.md
// and fails while the promise is broken.

// TestBreakAlternatingMaps: nothing checks that an epoch's map holds what
// the previous epoch's map held (docs/key-transparency.md §5 lists it as
// "Append-only map across epochs", and says a dropped leaf only hides a
// version "never shown to anyone"). A server that makes epochs when it
// likes (it does: every second, and the record's time is all a client
// checks) can build ONE linear, signed, consistent log whose epochs
// alternate between two maps: map A holds a rogue v2 of alice, map B only
// her own v1. Every lookup of bob is answered at the newest epoch while
// it is an A epoch, every history of alice while it is a B epoch. Each
// answer is at the newest epoch of a checkpoint consistent with all the
// others (so gossip agrees), bob's version of alice never goes back (v2
// every time), and alice's history from v1 proves v2 absent. The rogue key
// stays in use for bob for as long as the server likes, and nothing
// alarms. The promise (§3.2/§4): "a lookup cannot show a version beyond
// the one the owner's history ends at"; "one clean run covers every epoch
// up to the newest".
func TestBreakAlternatingMaps(t *testing.T) {
	ctx := context.Background()
	s, v, vkey, k := newKeys(t, "kt.test/log")
	dA := openTestDir(t, t.TempDir(), s, v, vkey, k)
	t.Cleanup(func() { dA.Close() })
	dB := openTestDir(t, t.TempDir(), s, v, vkey, k)
	t.Cleanup(func() { dB.Close() })
	cfgA, cfgB := dA.Config(), dB.Config()
	if cfgA.Hash() != cfgB.Hash() {
		t.Fatal("configs differ")
	}
	own, rogue := []byte("alice's own binding"), []byte("ROGUE binding")
	dA.publish(t, "alice", own)
	dA.publish(t, "alice", rogue) // map A: v1 own, v2 rogue
	dB.publish(t, "alice", own)   // map B: v1 own

	// The log the server serves to everyone: fillers, then epochs whose
	// roots alternate A, B, A. Each record is fresh by the clock.
	root := func(d *testDir) [32]byte {
		p, err := d.Lookup(ctx, "alice", 0)
		if err != nil {
			t.Fatal(err)
		}
		r, err := ParseEpochRecord(p.Epoch.Record)
		if err != nil {
			t.Fatal(err)
		}
		return r.Root
	}
	rootA, rootB := root(dA), root(dB)
	cfg := cfgA.Hash()
	tree := testonly.New(rfc6962.DefaultHasher)
	var records [][]byte
	add := func(r [32]byte) {
		rec := &EpochRecord{Epoch: uint64(len(records)), Timestamp: uint64(time.Now().UnixMilli()), Root: r, ConfigHash: cfg}
		records = append(records, rec.Marshal())
		tree.AppendData(rec.Marshal())
	}
	for range 10 {
		add(rootB)
	}
	sign := func(size uint64) []byte {
		body := fmt.Sprintf("%s\n%d\n%s\n", s.Name(), size, base64.StdEncoding.EncodeToString(tree.HashAt(size)))
		raw, err := note.Sign(&note.Note{Text: body}, s)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	// epoch answers at the newest epoch of the log as it is now, with a
	// consistency proof from known.
	epoch := func(known uint64) EpochProof {
		size := tree.Size()
		incl, err := tree.InclusionProof(size-1, size)
		if err != nil {
			t.Fatal(err)
		}
		ep := EpochProof{Record: records[size-1], Checkpoint: sign(size), Inclusion: incl, KnownSize: known}
		if known > 0 && known < size {
			if ep.Consistency, err = tree.ConsistencyProof(known, size); err != nil {
				t.Fatal(err)
			}
		}
		return ep
	}

	bob, alice := dA.verifier(t), dA.verifier(t)

	// An A epoch: bob looks alice up.
	add(rootA)
	pb, err := dA.Lookup(ctx, "alice", 0)
	if err != nil {
		t.Fatal(err)
	}
	pb.Epoch = epoch(bob.KnownSize())
	got, err := bob.VerifyLookup("alice", pb)
	if err != nil {
		t.Fatalf("bob's lookup: %v", err)
	}
	t.Logf("bob sees alice at version %d: %q", got.Version, got.Value)

	// A B epoch: alice checks her own label from v1, which she verified.
	add(rootB)
	ph, err := dB.History(ctx, "alice", 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	ph.Epoch = epoch(alice.KnownSize())
	hist, err := alice.VerifyHistory("alice", 1, ph)
	if err != nil {
		t.Fatalf("alice's history: %v", err)
	}
	st := OwnerState{Version: 1, Hash: sha256.Sum256(own)}
	_, alarms := st.Check(hist, ph.Marshal())
	t.Logf("alice's history: latest %d, %d alarms", hist.Latest(), len(alarms))

	// An A epoch again: bob looks again (his stored version does not go
	// back), and the two compare checkpoints (gossip).
	add(rootA)
	pb2, err := dA.Lookup(ctx, "alice", 0)
	if err != nil {
		t.Fatal(err)
	}
	pb2.Epoch = epoch(bob.KnownSize())
	got2, err := bob.VerifyLookup("alice", pb2)
	if err != nil {
		t.Fatalf("bob's second lookup: %v", err)
	}
	cons, err := tree.ConsistencyProof(alice.KnownSize(), bob.KnownSize())
	if err != nil {
		t.Fatal(err)
	}
	gossipA := alice.CompareCheckpoint(bob.Latest().Raw, cons)
	gossipB := bob.CompareCheckpoint(alice.Latest().Raw, cons)

	if got.Version == 2 && string(got.Value) == string(rogue) && got2.Version >= got.Version &&
		len(alarms) == 0 && gossipA == nil && gossipB == nil {
		t.Fatalf("bob was shown alice at version 2 (%q) at epochs %d and %d; alice's history at epoch %d (between them) ends at version %d with no alarm; their checkpoints (sizes %d, %d) agree: nothing detects it",
			got.Value, got.Record.Epoch, got2.Record.Epoch, hist.Record.Epoch, hist.Latest(), alice.KnownSize(), bob.KnownSize())
	}
}
