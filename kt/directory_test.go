package kt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/quicprochat/qpc/kt/kttest/logkeys"
	"github.com/quicprochat/qpc/kt/vrf"
	"golang.org/x/mod/sumdb/note"
)

type testDir struct {
	*Directory
	vkey string
	opts DirectoryOptions
}

func newKeys(t testing.TB, origin string) (note.Signer, note.Verifier, string, *vrf.PrivateKey) {
	t.Helper()
	k := logkeys.New(t, origin)
	return k.Signer, k.Verifier, k.VKey, k.VRF
}

func openTestDir(t testing.TB, dir string, s note.Signer, v note.Verifier, vkey string, k *vrf.PrivateKey) *testDir {
	t.Helper()
	opts := DirectoryOptions{Dir: dir, LogSigner: s, LogVerifier: v, VRFKey: k, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	d, err := OpenDirectory(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return &testDir{Directory: d, vkey: vkey, opts: opts}
}

func newTestDir(t testing.TB) *testDir {
	s, v, vkey, k := newKeys(t, "kt.test/log")
	d := openTestDir(t, t.TempDir(), s, v, vkey, k)
	t.Cleanup(func() { d.Close() })
	return d
}

func (d *testDir) verifier(t testing.TB) *Verifier {
	t.Helper()
	v, err := NewVerifierFromConfig(d.vkey, d.Config())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// publish queues the values and runs one epoch.
func (d *testDir) publish(t testing.TB, label string, values ...[]byte) []Published {
	t.Helper()
	var chs []<-chan Published
	for _, v := range values {
		ch, err := d.Enqueue(label, v)
		if err != nil {
			t.Fatal(err)
		}
		chs = append(chs, ch)
	}
	if _, err := d.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	var out []Published
	for _, ch := range chs {
		p := <-ch
		if p.Err != nil {
			t.Fatal(p.Err)
		}
		out = append(out, p)
	}
	return out
}

func lookup(t testing.TB, d *testDir, v *Verifier, label string) (*LookupResult, error) {
	t.Helper()
	p, err := d.Lookup(context.Background(), label, v.KnownSize())
	if err != nil {
		t.Fatal(err)
	}
	q, err := ParseLookupProof(p.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	return v.VerifyLookup(label, q)
}

func TestDirectoryLookupHistory(t *testing.T) {
	d := newTestDir(t)
	v := d.verifier(t)
	res, err := lookup(t, d, v, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != 0 || res.Record.Epoch != 0 {
		t.Fatalf("empty directory: version %d epoch %d", res.Version, res.Record.Epoch)
	}
	var want [][]byte
	for i := range 13 {
		val := []byte(fmt.Sprintf("alice key %d", i))
		want = append(want, val)
		d.publish(t, "alice", val)
		d.publish(t, fmt.Sprintf("user%d", i), []byte("x"))
		res, err := lookup(t, d, v, "alice")
		if err != nil {
			t.Fatalf("lookup after version %d: %v", i+1, err)
		}
		if res.Version != uint32(i+1) || !bytes.Equal(res.Value, val) {
			t.Fatalf("lookup: version %d value %q", res.Version, res.Value)
		}
	}
	// Two versions in one epoch.
	d.publish(t, "bob", []byte("b1"), []byte("b2"))
	res, err = lookup(t, d, v, "bob")
	if err != nil || res.Version != 2 || string(res.Value) != "b2" {
		t.Fatalf("bob: %v %+v", err, res)
	}
	// Unknown labels verify as absent.
	if res, err := lookup(t, d, v, "carol"); err != nil || res.Version != 0 {
		t.Fatalf("carol: %v", err)
	}
	// Full history and history from a version.
	hp, err := d.History(context.Background(), "alice", 0, v.KnownSize())
	if err != nil {
		t.Fatal(err)
	}
	hq, err := ParseHistoryProof(hp.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	h, err := v.VerifyHistory("alice", 0, hq)
	if err != nil {
		t.Fatal(err)
	}
	if h.Latest() != 13 || len(h.Versions) != 13 {
		t.Fatalf("history: %d versions, latest %d", len(h.Versions), h.Latest())
	}
	for i, e := range h.Versions {
		if !bytes.Equal(e.Value, want[i]) {
			t.Fatalf("history version %d: %q", e.Version, e.Value)
		}
	}
	since := uint32(9)
	hp, _ = d.History(context.Background(), "alice", since, v.KnownSize())
	h, err = v.VerifyHistory("alice", since, hp)
	if err != nil {
		t.Fatal(err)
	}
	if h.Versions[0].Version != 9 || h.Latest() != 13 {
		t.Fatalf("history since %d: versions %d..%d", since, h.Versions[0].Version, h.Latest())
	}
}

// TestAttackOmittedVersion: a server that leaves a version out of a
// history proof is caught, whether it drops an entry or claims an older
// latest version.
func TestAttackOmittedVersion(t *testing.T) {
	d := newTestDir(t)
	v := d.verifier(t)
	for i := range 5 {
		d.publish(t, "alice", []byte{byte(i)})
	}
	hp, _ := d.History(context.Background(), "alice", 0, v.KnownSize())
	// Drop a middle entry.
	mid := *hp
	mid.Entries = append(append([]HistoryEntry(nil), hp.Entries[:2]...), hp.Entries[3:]...)
	if _, err := v.VerifyHistory("alice", 0, &mid); !errors.Is(err, ErrInvalid) {
		t.Fatalf("history without version 3: %v", err)
	}
	// Drop the latest entry and bring absence proofs for "latest = 4":
	// version 5 is in the tree, so its absence cannot be proved.
	last := *hp
	last.Entries = hp.Entries[:4]
	last.Absent = nil
	for _, av := range absentSet(4) {
		p, err := d.versionProofAtView("alice", av)
		if err != nil {
			t.Fatal(err)
		}
		last.Absent = append(last.Absent, p)
	}
	if _, err := v.VerifyHistory("alice", 0, &last); !errors.Is(err, ErrInvalid) {
		t.Fatalf("history hiding version 5: %v", err)
	}
	// The honest proof verifies.
	if _, err := v.VerifyHistory("alice", 0, hp); err != nil {
		t.Fatal(err)
	}
}

// TestAttackRollback: an answer under an older checkpoint is refused.
func TestAttackRollback(t *testing.T) {
	d := newTestDir(t)
	v := d.verifier(t)
	d.publish(t, "alice", []byte("a"))
	old, _ := d.Lookup(context.Background(), "alice", 0)
	d.publish(t, "bob", []byte("b"))
	if _, err := lookup(t, d, v, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifyLookup("alice", old); !errors.Is(err, ErrRollback) {
		t.Fatalf("old checkpoint: %v", err)
	}
}

// TestAttackSplitView: two directories under one log key show two clients
// different checkpoints of the same size; comparing them exposes it.
func TestAttackSplitView(t *testing.T) {
	s, nv, vkey, k := newKeys(t, "kt.test/log")
	a := openTestDir(t, t.TempDir(), s, nv, vkey, k)
	defer a.Close()
	b := openTestDir(t, t.TempDir(), s, nv, vkey, k)
	defer b.Close()
	a.publish(t, "alice", []byte("real key"))
	b.publish(t, "alice", []byte("attacker key"))
	va, vb := a.verifier(t), b.verifier(t)
	ra, err := lookup(t, a.testDirPtr(), va, "alice")
	if err != nil {
		t.Fatal(err)
	}
	rb, err := lookup(t, b.testDirPtr(), vb, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if ra.Checkpoint.Size != rb.Checkpoint.Size {
		t.Fatalf("sizes differ: %d %d", ra.Checkpoint.Size, rb.Checkpoint.Size)
	}
	var sv *SplitViewError
	if err := va.CompareCheckpoint(rb.Checkpoint.Raw, nil); !errors.As(err, &sv) {
		t.Fatalf("compare: %v", err)
	}
	if _, err := note.Open(sv.Seen, note.VerifierList(nv)); err != nil {
		t.Fatal("evidence does not verify")
	}
	// A client that saw one view refuses the other for the same size.
	if _, err := vb.VerifyLookup("alice", mustLookup(t, a, "alice", 0)); !errors.As(err, &sv) {
		t.Fatalf("other view: %v", err)
	}
	// A later checkpoint of the other fork fails its consistency proof.
	a.publish(t, "carol", []byte("c"))
	if _, err := vb.VerifyLookup("alice", mustLookup(t, a, "alice", vb.KnownSize())); !errors.Is(err, ErrInconsistent) {
		t.Fatalf("forked growth: %v", err)
	}
	// Agreeing views compare clean, across sizes too.
	cp, _ := a.Consistency(context.Background(), ra.Checkpoint.Size)
	if err := va.CompareCheckpoint(cp.Checkpoint, cp.Hashes); err != nil {
		t.Fatal(err)
	}
}

func (d *testDir) testDirPtr() *testDir { return d }

func mustLookup(t testing.TB, d *testDir, label string, known uint64) *LookupProof {
	t.Helper()
	p, err := d.Lookup(context.Background(), label, known)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCrashBetweenCommitAndAppend: an epoch committed to bbolt whose log
// append never happened is logged on restart, and lookups verify.
func TestCrashBetweenCommitAndAppend(t *testing.T) {
	s, nv, vkey, k := newKeys(t, "kt.test/log")
	dir := t.TempDir()
	d := openTestDir(t, dir, s, nv, vkey, k)
	v := d.verifier(t)
	d.publish(t, "alice", []byte("v1"))
	if _, err := lookup(t, d, v, "alice"); err != nil {
		t.Fatal(err)
	}
	crash := errors.New("crash")
	d.opts.afterCommit = func(uint64) error { return crash }
	d.Directory.opts.afterCommit = d.opts.afterCommit
	ch, _ := d.Enqueue("alice", []byte("v2"))
	if _, err := d.Tick(context.Background()); !errors.Is(err, crash) {
		t.Fatalf("tick: %v", err)
	}
	_ = ch
	n, _ := d.epochCount()
	size, _ := d.log.size(context.Background())
	if size != n-1 {
		t.Fatalf("before restart: log %d, epochs %d", size, n)
	}
	d.Close()
	d = openTestDir(t, dir, s, nv, vkey, k)
	defer d.Close()
	size, _ = d.log.size(context.Background())
	if size != n {
		t.Fatalf("after restart: log %d, epochs %d", size, n)
	}
	res, err := lookup(t, d, v, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != 2 || string(res.Value) != "v2" {
		t.Fatalf("after restart: version %d %q", res.Version, res.Value)
	}
	// And the directory goes on.
	d.publish(t, "alice", []byte("v3"))
	if res, err := lookup(t, d, v, "alice"); err != nil || res.Version != 3 {
		t.Fatalf("after restart and an epoch: %v", err)
	}
}

// TestEpochLoopLatency: the epoch loop publishes within a few epochs. The
// bound is relative to what one epoch's commit costs on this machine now
// (measured by hand before and after, the slowest of them), so that a
// loaded CI machine or the race detector does not fail it, and never
// below the 2 s it was.
func TestEpochLoopLatency(t *testing.T) {
	d := newTestDir(t)
	const interval = 200 * time.Millisecond
	d.Directory.opts.EpochInterval = interval
	var commit time.Duration
	measure := func(label string) {
		for range 3 {
			start := time.Now()
			d.publish(t, label, []byte("k"))
			commit = max(commit, time.Since(start))
		}
	}
	measure("before")
	d.Start()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := d.Publish(ctx, "alice", []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	measure("after") // with the loop running too: lenient, not strict
	limit := max(2*time.Second, 5*interval+5*commit)
	t.Logf("publish to served checkpoint %v; one commit at most %v; limit %v", el, commit, limit)
	if el > limit {
		t.Fatalf("publish to served checkpoint took %v, more than %v (5 epochs and 5 commits of %v)", el, limit, commit)
	}
	cp, _ := d.Checkpoint()
	if cp.Size <= p.Epoch {
		t.Fatalf("served checkpoint of size %d does not hold epoch %d", cp.Size, p.Epoch)
	}
}

// versionProofAtView proves (label, version) at the served epoch with a
// fresh VRF proof (tests build forged answers from it).
func (d *Directory) versionProofAtView(label string, version uint32) (VersionProof, error) {
	v := d.view.Load()
	var p VersionProof
	err := d.boltDB().View(func(tx *bolt.Tx) error {
		var err error
		p, err = d.versionProof(txNodes{ts: d.ts, snap: boltSnapshot{tx: tx}}, v.epoch, label, version, nil)
		return err
	})
	return p, err
}

// TestMonitorRogueKey: the server publishes a key the owner never did and
// serves it in lookups; the lookup verifies (a server can always show a
// signed-by-someone binding) but the owner's monitoring raises an alarm
// with verifiable evidence.
func TestMonitorRogueKey(t *testing.T) {
	d := newTestDir(t)
	owner, other := d.verifier(t), d.verifier(t)
	var st OwnerState
	for i := range 2 {
		val := []byte{byte(i)}
		st.Publishing(val)
		p := d.publish(t, "alice", val)
		if a := st.Published(val, p[0].Version); a != nil {
			t.Fatal(a)
		}
	}
	// All clear first.
	hp, _ := d.History(context.Background(), "alice", st.Version, owner.KnownSize())
	h, err := owner.VerifyHistory("alice", st.Version, hp)
	if err != nil {
		t.Fatal(err)
	}
	st2, a := st.Check(h, hp.Marshal())
	if len(a) != 0 || st2.Version != 2 || len(st2.Pending) != 0 {
		t.Fatalf("without an attack: alarms %v, state %+v", a, st2)
	}
	st = st2
	// The attack.
	d.publish(t, "alice", []byte("attacker's key"))
	res, err := lookup(t, d, other, "alice")
	if err != nil || string(res.Value) != "attacker's key" {
		t.Fatalf("rogue lookup: %v", err)
	}
	hp, _ = d.History(context.Background(), "alice", st.Version, owner.KnownSize())
	raw := hp.Marshal()
	h, err = owner.VerifyHistory("alice", st.Version, hp)
	if err != nil {
		t.Fatal(err)
	}
	st2, alarms := st.Check(h, raw)
	if len(alarms) != 1 || alarms[0].Version != 3 || string(alarms[0].Value) != "attacker's key" || st2.Version != 2 {
		t.Fatalf("alarms: %v, state %+v", alarms, st2)
	}
	// The evidence verifies for a third party.
	third := d.verifier(t)
	ev, err := ParseHistoryProof(alarms[0].Proof)
	if err != nil {
		t.Fatal(err)
	}
	if h3, err := third.VerifyHistory("alice", 2, ev); err != nil || h3.Latest() != 3 {
		t.Fatalf("evidence: %v", err)
	}
	// A server hiding the rogue version from the owner cannot also show it
	// to others: the owner's earlier history proved its ladder versions absent.
	if _, err := lookup(t, d, owner, "alice"); err != nil {
		t.Fatal(err)
	}
}

// TestHistoryPages: a history longer than MaxHistoryServed comes in pages,
// each proving the version after it present; the last page proves the
// greatest version. A greatest version below the one asked from comes
// alone.
func TestHistoryPages(t *testing.T) {
	d := newTestDir(t)
	n := MaxHistoryServed + 5
	vals := make([][]byte, n)
	for i := range vals {
		vals[i] = []byte{byte(i)}
	}
	d.publish(t, "alice", vals...)
	v := d.verifier(t)
	p, err := d.History(context.Background(), "alice", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	q, err := ParseHistoryProof(p.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	h, err := v.VerifyHistory("alice", 0, q)
	if err != nil || !h.More || len(h.Versions) != MaxHistoryServed || h.Latest() != MaxHistoryServed {
		t.Fatalf("first page: %v", err)
	}
	// A page that claims more but cannot prove it.
	bad := *p
	bad.Next.Version++
	if _, err := v.VerifyHistory("alice", 0, &bad); !errors.Is(err, ErrInvalid) {
		t.Fatalf("page with a wrong next version: %v", err)
	}
	p, _ = d.History(context.Background(), "alice", h.Latest(), v.KnownSize())
	h, err = v.VerifyHistory("alice", MaxHistoryServed, p)
	if err != nil || h.More || h.Versions[0].Version != MaxHistoryServed || h.Latest() != uint32(n) {
		t.Fatalf("last page: %v", err)
	}
	// From beyond the greatest version: that version alone.
	p, _ = d.History(context.Background(), "alice", 1000, v.KnownSize())
	h, err = v.VerifyHistory("alice", 1000, p)
	if err != nil || h.Latest() != uint32(n) || len(h.Versions) != 1 {
		t.Fatalf("history from beyond: %v", err)
	}
}

// TestConcurrentPublishes: publishes of one label from many goroutines
// get distinct consecutive versions whatever order their reserved VRF
// proofs finish in, and the history verifies.
func TestConcurrentPublishes(t *testing.T) {
	d := newTestDir(t)
	v := d.verifier(t)
	const n = 12
	chs := make(chan (<-chan Published), n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch, err := d.Enqueue("alice", []byte{byte(i)})
			if err != nil {
				t.Error(err)
				return
			}
			chs <- ch
		}()
	}
	wg.Wait()
	close(chs)
	if _, err := d.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	seen := map[uint32]bool{}
	for ch := range chs {
		p := <-ch
		if p.Err != nil || seen[p.Version] || p.Version < 1 || p.Version > n {
			t.Fatalf("publish: %+v", p)
		}
		seen[p.Version] = true
	}
	// A second round reserves past the committed versions.
	d.publish(t, "alice", []byte("last"))
	hp, err := d.History(context.Background(), "alice", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	h, err := v.VerifyHistory("alice", 0, hp)
	if err != nil || h.Latest() != n+1 || string(h.Versions[n].Value) != "last" {
		t.Fatalf("history: %v", err)
	}
}

// boltDB is the directory's bbolt database, for tests that read or forge
// its buckets directly.
func (d *Directory) boltDB() *bolt.DB { return d.store.(*boltTree).db }
