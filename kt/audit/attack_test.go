package audit

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/kttest"
)

// Attack tests: a lying log (real tiles signed with the log's key, served
// over HTTP) against a real auditor. Each fails if the auditor cosigns —
// returns nil for — a checkpoint covering the lie, or blames the wrong
// epoch or check.

// auditForged opens an auditor on f's log, has it accept the honest
// prefix (cp) and returns it.
func auditForged(t *testing.T, k kttest.Keys, f *forger, cp []byte) *Auditor {
	t.Helper()
	a := openAuditor(t, t.TempDir()+"/audit.db", Options{Log: HTTPLog(f.log.base, nil), Verifier: k.Verifier})
	if err := a.Audit(context.Background(), cp); err != nil {
		t.Fatalf("the honest prefix: %v", err)
	}
	return a
}

// TestAuditDroppedLeaf: the log drops a leaf an earlier epoch inserted
// (a version someone was shown disappears from the map) while publishing
// an honest-looking list of this epoch's inserts. The auditor must refuse
// that epoch: its root does not follow from the previous tree.
func TestAuditDroppedLeaf(t *testing.T) {
	k := newKeys(t)
	f := newForger(t, k)
	a := auditForged(t, k, f, f.honest(t, 4))
	fresh := randomLeaves(4)
	var kept []kt.Leaf
	for i, l := range f.leaves {
		if i != 5 { // a leaf of epoch 2
			kept = append(kept, l)
		}
	}
	cp := f.lie(t, fresh, append(kept, fresh...), nil, nil)
	err := a.Audit(context.Background(), cp)
	wantRefusal(t, err, 4, CheckRoot)
	if a.Size() != 4 {
		t.Fatalf("the auditor is at %d epochs, want 4 (the honest prefix)", a.Size())
	}
	// Asking again does not help the log.
	wantRefusal(t, a.Audit(context.Background(), cp), 4, CheckRoot)
}

// TestAuditReplacedLeaf: the log changes the commitment of a leaf an
// earlier epoch inserted (a version's value swapped) and lists the new
// leaf among this epoch's inserts, so the list and the root agree with
// each other. The auditor must refuse: the index is not new.
func TestAuditReplacedLeaf(t *testing.T) {
	k := newKeys(t)
	f := newForger(t, k)
	a := auditForged(t, k, f, f.honest(t, 4))
	swapped := f.leaves[5]
	swapped.Commitment[0] ^= 1
	list := append(randomLeaves(3), swapped)
	tree := append(append([]kt.Leaf(nil), f.leaves...), list[:3]...)
	tree[5] = swapped
	cp := f.lie(t, list, tree, nil, nil)
	wantRefusal(t, a.Audit(context.Background(), cp), 4, CheckNewIndex)
	if a.Size() != 4 {
		t.Fatalf("the auditor is at %d epochs, want 4", a.Size())
	}
}

// TestAuditDigestMismatch: the log inserts a leaf it does not list (the
// record's digest covers it, the published list leaves it out), so that
// the list an auditor sees hides a rogue version. The auditor must refuse
// the epoch on the digest.
func TestAuditDigestMismatch(t *testing.T) {
	k := newKeys(t)
	f := newForger(t, k)
	a := auditForged(t, k, f, f.honest(t, 4))
	list := randomLeaves(4)
	hidden := kt.UpdateList{Epoch: 4, Leaves: list[:3]}
	cp := f.lie(t, list, append(append([]kt.Leaf(nil), f.leaves...), list...), nil, func([]byte) []byte { return hidden.Marshal() })
	wantRefusal(t, a.Audit(context.Background(), cp), 4, CheckDigest)
}

// TestAuditRecordChecks: the other ways an epoch can fail, each refused
// at that epoch for its check: an epoch number skipped, time going back,
// another configuration, an update list withheld, malformed or of another
// epoch, and a log entry that is no epoch record.
func TestAuditRecordChecks(t *testing.T) {
	cases := []struct {
		name       string
		editRecord func(*kt.EpochRecord)
		editList   func([]byte) []byte
		check      Check
	}{
		{"epoch skipped", func(r *kt.EpochRecord) { r.Epoch++ }, nil, CheckConsecutive},
		{"time goes back", func(r *kt.EpochRecord) { r.Timestamp -= 60_000 }, nil, CheckTimestamp},
		{"config changed", func(r *kt.EpochRecord) { r.ConfigHash[0] ^= 1 }, nil, CheckConfig},
		{"list withheld", nil, func([]byte) []byte { return nil }, CheckUpdateList},
		{"list malformed", nil, func(b []byte) []byte { return b[:len(b)-1] }, CheckUpdateList},
		{"list of another epoch", nil, func(b []byte) []byte { b[8] ^= 1; return b }, CheckUpdateList},
	}
	k := newKeys(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newForger(t, k)
			a := auditForged(t, k, f, f.honest(t, 3))
			list := randomLeaves(4)
			cp := f.lie(t, list, append(append([]kt.Leaf(nil), f.leaves...), list...), c.editRecord, c.editList)
			wantRefusal(t, a.Audit(context.Background(), cp), 3, c.check)
		})
	}
	t.Run("not a record", func(t *testing.T) {
		f := newForger(t, k)
		a := auditForged(t, k, f, f.honest(t, 3))
		f.log.Append(t, make([]byte, 50), nil)
		wantRefusal(t, a.Audit(context.Background(), f.log.Checkpoint(t)), 3, CheckRecord)
	})
}

// TestAuditFutureEpoch: the lying log dates an epoch 14 minutes ahead.
// Clients accept a record within kt.DefaultMaxEpochAge of their clock
// either way, so once the log stops there, a client stays frozen on that
// epoch for 29 minutes instead of 15. The auditor must not pass it while
// it is more than MaxClockSkew ahead of its clock (ErrFutureEpoch, not
// evidence: it stays before the epoch), and passes it once its time has
// come. Before: only "not before the previous record" was checked.
func TestAuditFutureEpoch(t *testing.T) {
	k := newKeys(t)
	f := newForger(t, k)
	clock := time.Now()
	a := openAuditor(t, t.TempDir()+"/audit.db", Options{Log: HTTPLog(f.log.base, nil), Verifier: k.Verifier, Now: func() time.Time { return clock }})
	if err := a.Audit(context.Background(), f.honest(t, 3)); err != nil {
		t.Fatal(err)
	}
	list := randomLeaves(4)
	cp := f.lie(t, list, append(append([]kt.Leaf(nil), f.leaves...), list...), func(r *kt.EpochRecord) { r.Timestamp += uint64((14 * time.Minute).Milliseconds()) }, nil)
	err := a.Audit(context.Background(), cp)
	if !errors.Is(err, ErrFutureEpoch) || a.Size() != 3 {
		t.Fatalf("epoch dated 14 minutes ahead: %v (audited %d epochs), want ErrFutureEpoch at 3", err, a.Size())
	}
	if _, isEvidence := errors.AsType[*Error](err); isEvidence {
		t.Fatalf("a clock difference reported as evidence: %v", err)
	}
	clock = clock.Add(13 * time.Minute)
	if err := a.Audit(context.Background(), cp); err != nil || a.Size() != 4 {
		t.Fatalf("the same epoch once its time has come: %v (audited %d)", err, a.Size())
	}
}
