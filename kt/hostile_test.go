package kt

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Attacks of a lying directory on its own clients (issue 17): the server
// holds the signing and VRF keys and can put anything in its map and log;
// what it cannot do is show answers that contradict one another.

// forgedVersion is a version a lying server puts in its map: any version
// number, any "added" epoch (back-dated, say), any value.
type forgedVersion struct {
	version uint32
	added   uint64
	value   []byte
}

// forge commits one epoch holding the forged versions of label (and the
// usual padding) and serves it, as a server that ignores the rules would.
func (d *testDir) forge(t testing.TB, label string, fs []forgedVersion) uint64 {
	t.Helper()
	d.writeMu.Lock()
	defer d.writeMu.Unlock()
	var dirty map[nodeID]*nodeRecord
	var e uint64
	err := d.boltDB().Update(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bucketEpochs).Cursor().Last()
		e = binary.BigEndian.Uint64(k) + 1
		tb := newTreeBatch(txNodes{ts: d.ts, snap: boltSnapshot{tx: tx}}, e)
		digest := sha256.New()
		versions := tx.Bucket(bucketVersions)
		for _, f := range fs {
			beta, pi := d.opts.VRFKey.Prove(vrfInput(label, f.version))
			rec := versionRecord{added: f.added, index: IndexOf(beta), proof: pi, value: f.value}
			rand.Read(rec.opening[:])
			c := Commit(rec.opening, label, f.version, rec.added, f.value)
			if err := tb.Insert(rec.index, c); err != nil {
				return err
			}
			lh := LeafHash(&rec.index, &c)
			digest.Write(lh[:])
			if err := versions.Put(versionKey(label, f.version), rec.marshal()); err != nil {
				return err
			}
		}
		root, err := tb.Finish()
		if err != nil {
			return err
		}
		if err := d.ts.putNodes(tx, tb.dirty); err != nil {
			return err
		}
		dirty = tb.dirty
		rec := EpochRecord{Epoch: e, Timestamp: uint64(time.Now().UnixMilli()), Root: root, ConfigHash: d.cfgHash}
		digest.Sum(rec.UpdatesDigest[:0])
		return tx.Bucket(bucketEpochs).Put(epochKey(e), rec.Marshal())
	})
	if err != nil {
		t.Fatal(err)
	}
	d.ts.publish(dirty)
	if err := d.syncLog(context.Background()); err != nil {
		t.Fatal(err)
	}
	return e
}

// proveAs builds the proofs a lying server would send for label at the
// served epoch: the stored versions in want present (with their stored
// records), the versions in absent as the map has them.
func (d *testDir) proveAs(t testing.TB, label string, want, absent []uint32) (EpochProof, []HistoryEntry, []VersionProof) {
	t.Helper()
	v := d.view.Load()
	ep, err := d.epochProof(context.Background(), v, 0)
	if err != nil {
		t.Fatal(err)
	}
	var entries []HistoryEntry
	var abs []VersionProof
	err = d.boltDB().View(func(tx *bolt.Tx) error {
		snap := boltSnapshot{tx: tx}
		av := answerView{snap: snap, src: txNodes{ts: d.ts, snap: snap}, epoch: v.epoch}
		for _, ver := range want {
			r, vp, err := d.storedVersionProof(av, label, ver)
			if err != nil {
				return err
			}
			entries = append(entries, HistoryEntry{Added: r.added, Opening: r.opening, Value: r.value, Proof: vp})
		}
		for _, ver := range absent {
			vp, err := d.versionProof(av.src, av.epoch, label, ver, nil)
			if err != nil {
				return err
			}
			abs = append(abs, vp)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ep, entries, abs
}

// TestHostileRogueVersionBackdated is the attack reproduced in the attack
// review: the owner verified v1 (at epoch C) and publishes e2; the server
// inserts ROGUE as v2, e2 as v4 back-dated below C, leaves v3 absent and
// answers the owner "version 4". Before: every lookup verified v2 =
// ROGUE (only v3 was proved absent), and the owner's monitor since C saw
// [v4] and no alarm. Now: the answer "version 4" is an alarm, a lookup
// claiming v2 does not verify (v4 is in absentSet(2)), and no history from
// v1 verifies (v3 is missing) unless the server fills v3, and then the
// owner's check alarms on ROGUE.
func TestHostileRogueVersionBackdated(t *testing.T) {
	d := newTestDir(t)
	owner, bob := d.verifier(t), d.verifier(t)
	e1, e2, rogue := []byte("owner binding 1"), []byte("owner binding 2"), []byte("ROGUE")

	var st OwnerState
	st.Publishing(e1)
	p := d.publish(t, "alice", e1)
	if a := st.Published(e1, p[0].Version); a != nil {
		t.Fatal(a)
	}
	d.publish(t, "x", []byte("x")) // a later epoch: the back-dated v4 goes before C
	hp, _ := d.History(context.Background(), "alice", st.Version, owner.KnownSize())
	h, err := owner.VerifyHistory("alice", st.Version, hp)
	if err != nil {
		t.Fatal(err)
	}
	st, alarms := st.Check(h, hp.Marshal())
	if len(alarms) != 0 || st.Version != 1 {
		t.Fatalf("before the attack: %v %+v", alarms, st)
	}
	c := h.Record.Epoch

	// The owner publishes e2; the server forges.
	st.Publishing(e2)
	d.forge(t, "alice", []forgedVersion{
		{version: 2, added: c - 1, value: rogue},
		{version: 4, added: c - 1, value: e2},
	})
	if a := st.Published(e2, 4); a == nil || a.Version != 4 {
		t.Fatalf("the server answered the publish with version 4 and the owner took it: %v", a)
	}

	// Bob's lookup claiming v2 = ROGUE (ladder {2}, absentSet(2)).
	ep, ents, abs := d.proveAs(t, "alice", []uint32{2}, absentSet(2))
	ep.KnownSize = 0
	lp := &LookupProof{Epoch: ep, Version: 2, Added: ents[0].Added, Opening: ents[0].Opening, Value: ents[0].Value,
		Ladder: []VersionProof{ents[0].Proof}, Absent: abs}
	if res, err := bob.VerifyLookup("alice", lp); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a lookup showing v2 = ROGUE while v4 exists: %v %+v", err, res)
	}
	// The honest lookup of the forged map shows the greatest version, 4.
	if res, err := lookup(t, d, bob, "alice"); err != nil || res.Version != 4 {
		t.Fatalf("lookup: %v", err)
	}

	// The owner's history from v1: every shape the server can build fails.
	if _, err := d.History(context.Background(), "alice", st.Version, owner.KnownSize()); err == nil {
		t.Fatal("the directory built a history across the missing v3")
	}
	histories := map[string]*HistoryProof{}
	ep, ents, abs = d.proveAs(t, "alice", []uint32{1, 2}, absentSet(2))
	histories["v1, v2 as the greatest"] = &HistoryProof{Epoch: ep, Since: 1, Entries: ents, Absent: abs}
	ep, ents, abs = d.proveAs(t, "alice", []uint32{1, 2, 4}, absentSet(4))
	histories["v1, v2, v4"] = &HistoryProof{Epoch: ep, Since: 1, Entries: ents, Absent: abs}
	ep, ents, abs = d.proveAs(t, "alice", []uint32{4}, absentSet(4))
	histories["v4 alone (back-dated)"] = &HistoryProof{Epoch: ep, Since: 1, Entries: ents, Absent: abs}
	ep, ents, _ = d.proveAs(t, "alice", []uint32{1, 2}, nil)
	_, _, next := d.proveAs(t, "alice", nil, []uint32{3})
	histories["v1, v2 and more"] = &HistoryProof{Epoch: ep, Since: 1, Entries: ents, More: true, Next: next[0]}
	for name, hp := range histories {
		if h, err := owner.VerifyHistory("alice", st.Version, hp); err == nil {
			if _, alarms := st.Check(h, hp.Marshal()); len(alarms) == 0 {
				t.Errorf("history %s: verified with no alarm", name)
			}
		}
	}

	// The server fills v3 with a replay of the owner's own old binding:
	// the history verifies, and the owner's check alarms on ROGUE.
	d.forge(t, "alice", []forgedVersion{{version: 3, added: c - 1, value: e1}})
	hp, err = d.History(context.Background(), "alice", st.Version, owner.KnownSize())
	if err != nil {
		t.Fatal(err)
	}
	h, err = owner.VerifyHistory("alice", st.Version, hp)
	if err != nil {
		t.Fatal(err)
	}
	st2, alarms := st.Check(h, hp.Marshal())
	if len(alarms) == 0 || alarms[0].Version != 2 || string(alarms[0].Value) != "ROGUE" || st2.Version != 1 {
		t.Fatalf("alarms %v, state %+v", alarms, st2)
	}
}

// TestHostileStaleEpochLookup: the server answers with an older epoch of
// its own consistent log (the record is in the checkpoint, so inclusion
// verifies), showing a version the label has since replaced. Before: any
// epoch in the log was accepted. Now: the record must be the checkpoint's
// last leaf. And a server that stops making epochs (a frozen view) is
// refused once its newest epoch is older than the verifier's bound.
func TestHostileStaleEpochLookup(t *testing.T) {
	d := newTestDir(t)
	v := d.verifier(t)
	d.publish(t, "alice", []byte("old key"))
	old, err := d.Lookup(context.Background(), "alice", 0)
	if err != nil {
		t.Fatal(err)
	}
	oldRec, _ := ParseEpochRecord(old.Epoch.Record)
	d.publish(t, "alice", []byte("new key"))
	if res, err := lookup(t, d, v, "alice"); err != nil || string(res.Value) != "new key" {
		t.Fatalf("lookup: %v", err)
	}
	// The old answer under the newest checkpoint.
	cur := d.view.Load()
	pb, err := d.log.proofBuilder(context.Background(), cur.checkpoint.Size)
	if err != nil {
		t.Fatal(err)
	}
	stale := *old
	stale.Epoch.Checkpoint, stale.Epoch.KnownSize, stale.Epoch.Consistency = cur.checkpoint.Raw, v.KnownSize(), nil
	if stale.Epoch.Inclusion, err = pb.InclusionProof(context.Background(), oldRec.Epoch); err != nil {
		t.Fatal(err)
	}
	if res, err := v.VerifyLookup("alice", &stale); !errors.Is(err, ErrStale) {
		t.Fatalf("a lookup under epoch %d of a log of %d: %v %+v", oldRec.Epoch, cur.checkpoint.Size, err, res)
	}
	// A frozen view: the newest epoch, but an hour old by the client's clock.
	later := time.Now().Add(time.Hour)
	v.SetClock(func() time.Time { return later }, 0)
	if _, err := lookup(t, d, v, "alice"); !errors.Is(err, ErrStale) {
		t.Fatalf("an hour-old epoch: %v", err)
	}
	v.SetClock(nil, 0)
	if _, err := lookup(t, d, v, "alice"); err != nil {
		t.Fatal(err)
	}
}

// TestHostileConcurrentForks: two answers from two forks of one log, each
// consistent with the checkpoint the verifier held when it was asked, are
// checked at the same time. Before: the check and the accept were apart,
// so both were accepted (the verifier ended on one fork having used an
// answer from the other). Now: exactly one is accepted; the other is
// refused (ErrAdvanced, to be asked again, which then exposes the fork).
func TestHostileConcurrentForks(t *testing.T) {
	s, nv, vkey, k := newKeys(t, "kt.test/log")
	a := openTestDir(t, t.TempDir(), s, nv, vkey, k)
	defer a.Close()
	a.publish(t, "alice", []byte("key"))
	dir := t.TempDir() + "/fork"
	if err := a.Backup(dir); err != nil {
		t.Fatal(err)
	}
	b := openTestDir(t, dir, s, nv, vkey, k)
	defer b.Close()
	v := a.verifier(t)
	if _, err := lookup(t, a, v, "alice"); err != nil {
		t.Fatal(err)
	}
	known := v.KnownSize()
	// The forks diverge, to different sizes.
	a.publish(t, "alice", []byte("honest key"))
	b.publish(t, "alice", []byte("rogue key"))
	b.publish(t, "bob", []byte("padding"))
	pa, err := a.Lookup(context.Background(), "alice", known)
	if err != nil {
		t.Fatal(err)
	}
	pbf, err := b.Lookup(context.Background(), "alice", known)
	if err != nil {
		t.Fatal(err)
	}
	// Both answers are checked before either is accepted.
	var ready sync.WaitGroup
	ready.Add(2)
	v.beforeAccept = func() { ready.Done(); ready.Wait() }
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, p := range []*LookupProof{pa, pbf} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = v.VerifyLookup("alice", p)
		}()
	}
	wg.Wait()
	v.beforeAccept = nil
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, ErrAdvanced) && !errors.Is(err, ErrInconsistent):
			t.Fatalf("refused with %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of the two forks' answers accepted (%v)", ok, errs)
	}
	// Asked again, the other fork is a split view.
	loser, loserDir := b, "b"
	if errs[1] == nil {
		loser, loserDir = a, "a"
	}
	p, err := loser.Lookup(context.Background(), "alice", v.KnownSize())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifyLookup("alice", p); !errors.Is(err, ErrInconsistent) && !errors.Is(err, ErrRollback) {
		t.Fatalf("fork %s asked again: %v", loserDir, err)
	}
}
