package audit

import (
	"context"
	"crypto/sha256"
	"path/filepath"
	"testing"
	"time"

	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/kttest"
	tclient "github.com/transparency-dev/tessera/client"
)

// TestAuditAlternatingMaps: the attack docs/key-transparency.md §5 named
// the largest gap (a review's TestBreakAlternatingMaps). A server runs ONE
// linear, signed, consistent log whose epochs alternate two maps: map A
// holds a rogue v2 of alice, map B only her own v1. Bob's lookups are
// answered while an A epoch is the newest, alice's histories while a B
// epoch is. Every client check passes — bob sees the rogue v2, alice's
// history from v1 is clean, their checkpoints agree — so only an auditor
// can catch it: map A is map B's predecessor plus the rogue leaf (an
// honest-looking epoch), but the B epoch after it drops that leaf. The
// auditor must accept the log up to the A epoch and refuse to vouch for
// any checkpoint covering the B epoch after it, naming that epoch and the
// root check. A witness that cosigns only audited checkpoints (Check)
// then leaves the B epoch uncosigned, and a client requiring the
// auditor's cosignature refuses alice's answer.
func TestAuditAlternatingMaps(t *testing.T) {
	ctx := context.Background()
	k := newKeys(t)
	d := kttest.OpenDirectory(t, t.TempDir(), k)
	own, rogue := []byte("alice's own binding"), []byte("ROGUE binding")
	publish := func(d *kt.Directory, label string, value []byte) {
		t.Helper()
		ch, err := d.Enqueue(label, value)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		if p := <-ch; p.Err != nil {
			t.Fatal(p.Err)
		}
	}
	publish(d, "alice", own)
	tick(t, d, "bob", "carol")
	tick(t, d)
	// Map B: the directory as it is now, growing honestly on its own.
	dB := kttest.OpenDirectory(t, func() string {
		dir := filepath.Join(t.TempDir(), "b")
		if err := d.Backup(dir); err != nil {
			t.Fatal(err)
		}
		return dir
	}(), k)
	shared := recordOf(t, d).Epoch + 1 // epochs 0..shared-1 are in both
	publish(d, "alice", rogue)         // map A: epoch `shared` adds the rogue v2
	tick(t, dB)                        // map B: epoch `shared` adds padding only

	// The log the server shows everyone: the shared epochs, an A epoch,
	// then a B epoch.
	f := newForgedLog(t, k)
	eb, err := tclient.GetEntryBundle(ctx, bundleFetcher(DirectoryLog(d)), 0, shared+1)
	if err != nil {
		t.Fatal(err)
	}
	for e := range shared + 1 { // the shared epochs, and A's
		rec, err := kt.ParseEpochRecord(eb.Entries[e])
		if err != nil {
			t.Fatal(err)
		}
		list, err := d.UpdateList(e)
		if err != nil {
			t.Fatal(err)
		}
		f.append(t, rec, list)
	}
	cpA := f.Checkpoint(t)
	recB := recordOf(t, dB)
	listB, err := dB.UpdateList(recB.Epoch)
	if err != nil {
		t.Fatal(err)
	}
	ulB, err := kt.ParseUpdateList(listB)
	if err != nil {
		t.Fatal(err)
	}
	recB.Epoch, ulB.Epoch = shared+1, shared+1
	recB.Timestamp = uint64(time.Now().UnixMilli())

	// The clients, answered at the newest epoch each time.
	pb := func(size uint64) *tclient.ProofBuilder {
		b, err := tclient.NewProofBuilder(ctx, size, tileFetcher(HTTPLog(f.base, nil)))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	epochProof := func(rec, cp []byte, size, known uint64) kt.EpochProof {
		b := pb(size)
		incl, err := b.InclusionProof(ctx, size-1)
		if err != nil {
			t.Fatal(err)
		}
		ep := kt.EpochProof{Record: rec, Checkpoint: cp, Inclusion: incl, KnownSize: known}
		if known > 0 && known < size {
			if ep.Consistency, err = b.ConsistencyProof(ctx, known, size); err != nil {
				t.Fatal(err)
			}
		}
		return ep
	}
	cfg := d.Config()
	bob, err := kt.NewVerifierFromConfig(k.VKey, cfg)
	if err != nil {
		t.Fatal(err)
	}
	alice, err := kt.NewVerifierFromConfig(k.VKey, cfg)
	if err != nil {
		t.Fatal(err)
	}
	lookup, err := d.Lookup(ctx, "alice", 0)
	if err != nil {
		t.Fatal(err)
	}
	lookup.Epoch = epochProof(eb.Entries[shared], cpA, shared+1, 0)
	got, err := bob.VerifyLookup("alice", lookup)
	if err != nil {
		t.Fatalf("bob's lookup at the A epoch: %v", err)
	}

	f.append(t, recB, ulB.Marshal())
	cpB := f.Checkpoint(t)
	hp, err := dB.History(ctx, "alice", 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	hp.Epoch = epochProof(recB.Marshal(), cpB, shared+2, 0)
	hist, err := alice.VerifyHistory("alice", 1, hp)
	if err != nil {
		t.Fatalf("alice's history at the B epoch: %v", err)
	}
	_, alarms := kt.OwnerState{Version: 1, Hash: sha256.Sum256(own)}.Check(hist, hp.Marshal())
	cons, err := pb(shared+2).ConsistencyProof(ctx, shared+1, shared+2)
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.CompareCheckpoint(cpA, cons); err != nil {
		t.Fatalf("gossip: %v", err)
	}
	// The attack is real: without an auditor nobody notices.
	if got.Version != 2 || string(got.Value) != string(rogue) || hist.Latest() != 1 || len(alarms) != 0 {
		t.Fatalf("the scenario did not play: bob saw v%d %q, alice's history ends at v%d with %d alarms", got.Version, got.Value, hist.Latest(), len(alarms))
	}

	// The auditor, following the same log over HTTP.
	a := openAuditor(t, filepath.Join(t.TempDir(), "audit.db"), Options{Log: HTTPLog(f.base, nil), Verifier: k.Verifier, ConfigHash: cfg.Hash()})
	if err := a.Audit(ctx, cpA); err != nil {
		t.Fatalf("the log up to the A epoch grew honestly, yet: %v", err)
	}
	err = a.Audit(ctx, cpB)
	wantRefusal(t, err, shared+1, CheckRoot)
	if a.Size() != shared+1 {
		t.Fatalf("the auditor is at %d epochs, want %d", a.Size(), shared+1)
	}
	// Through the witness's hook: the A checkpoint is vouched for, the B
	// one is not, nor a checkpoint passed off as another tree.
	cpa, err := kt.OpenCheckpoint(cpA, k.Verifier)
	if err != nil {
		t.Fatal(err)
	}
	cpb, err := kt.OpenCheckpoint(cpB, k.Verifier)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.CheckTree(ctx, cpa.Size, cpa.Root, cpA); err != nil {
		t.Fatalf("CheckTree of the A checkpoint: %v", err)
	}
	wantRefusal(t, a.CheckTree(ctx, cpb.Size, cpb.Root, cpB), shared+1, CheckRoot)
	if err := a.CheckTree(ctx, cpb.Size, cpa.Root, cpA); err == nil {
		t.Fatal("CheckTree vouched for a checkpoint that is not the tree offered")
	}
	t.Logf("bob was shown alice v2 at epoch %d, alice's history at epoch %d was clean; the auditor refused: %v", shared, shared+1, err)
}
