package audit

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/kttest"
	bolt "go.etcd.io/bbolt"
)

// newKeys makes the keys of a log named kt.audit.test/log.
func newKeys(t testing.TB) kttest.Keys { return kttest.NewKeys(t, "kt.audit.test/log") }

// tick queues one publish per label and makes one epoch.
func tick(t testing.TB, d *kt.Directory, labels ...string) {
	t.Helper()
	var chs []<-chan kt.Published
	for _, l := range labels {
		ch, err := d.Enqueue(l, []byte("binding of "+l+" at "+time.Now().String()))
		if err != nil {
			t.Fatal(err)
		}
		chs = append(chs, ch)
	}
	if _, err := d.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, ch := range chs {
		if p := <-ch; p.Err != nil {
			t.Fatal(p.Err)
		}
	}
}

// serve serves h over HTTP and returns the base URL of the log.
func serve(t testing.TB, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL + "/kt"
}

func openAuditor(t testing.TB, path string, opts Options) *Auditor {
	t.Helper()
	a, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// wantRefusal checks that err is the auditor's refusal of epoch for check.
func wantRefusal(t testing.TB, err error, epoch uint64, check Check) {
	t.Helper()
	var ae *Error
	if !errors.As(err, &ae) {
		t.Fatalf("audit: %v; want a refusal of epoch %d (%s)", err, epoch, check)
	}
	if ae.Epoch != epoch || ae.Check != check {
		t.Fatalf("audit refused epoch %d (%s): %v; want epoch %d (%s)", ae.Epoch, ae.Check, ae, epoch, check)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("epoch %d", epoch)) || !strings.Contains(err.Error(), string(check)) {
		t.Fatalf("the error does not name the epoch and the check: %v", err)
	}
}

// forgedLog is a log a lying server keeps (kttest.ForgedLog), served
// over HTTP at base as the real server serves it.
type forgedLog struct {
	*kttest.ForgedLog
	base string
}

func newForgedLog(t testing.TB, k kttest.Keys) *forgedLog {
	t.Helper()
	l := kttest.NewForgedLog(t, k.Signer, k.Verifier, kttest.ForgedLogOptions{})
	return &forgedLog{ForgedLog: l, base: serve(t, l.Handler())}
}

// append appends a record and publishes list (nil: none) as its update
// list.
func (f *forgedLog) append(t testing.TB, rec *kt.EpochRecord, list []byte) {
	t.Helper()
	f.Append(t, rec.Marshal(), list)
}

// forger builds epochs of random leaves as a log would, and lets the test
// lie about one.
type forger struct {
	log    *forgedLog
	cfg    [32]byte
	leaves []kt.Leaf // every leaf of the honest tree so far
	tree   *kt.ReplayTree
	epoch  uint64
}

func newForger(t testing.TB, k kttest.Keys) *forger {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "forger.db"), 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	rt, err := kt.OpenReplayTree(db, 4)
	if err != nil {
		t.Fatal(err)
	}
	return &forger{log: newForgedLog(t, k), cfg: [32]byte{1, 2, 3}, tree: rt}
}

func randomLeaves(n int) []kt.Leaf {
	out := make([]kt.Leaf, n)
	for i := range out {
		rand.Read(out[i].Index[:])
		rand.Read(out[i].Commitment[:])
	}
	return out
}

// rootOf is the root of the prefix tree holding exactly leaves, computed
// with a tree of its own.
func rootOf(t testing.TB, leaves []kt.Leaf) [32]byte {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "root.db"), 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rt, err := kt.OpenReplayTree(db, 4)
	if err != nil {
		t.Fatal(err)
	}
	var root [32]byte
	if err := rt.Apply(0, leaves, func(_ *bolt.Tx, r [32]byte) error { root = r; return nil }); err != nil {
		t.Fatal(err)
	}
	return root
}

// honest adds n epochs of four fresh leaves each (epoch 0: none), as an
// honest log makes them, and returns the checkpoint covering them.
func (f *forger) honest(t testing.TB, n int) []byte {
	t.Helper()
	for range n {
		var fresh []kt.Leaf
		if f.epoch > 0 {
			fresh = randomLeaves(4)
		}
		var root [32]byte
		if err := f.tree.Apply(f.epoch, fresh, func(_ *bolt.Tx, r [32]byte) error { root = r; return nil }); err != nil {
			t.Fatal(err)
		}
		f.leaves = append(f.leaves, fresh...)
		ul := kt.UpdateList{Epoch: f.epoch, Leaves: fresh}
		f.log.append(t, &kt.EpochRecord{Epoch: f.epoch, Timestamp: uint64(time.Now().UnixMilli()), Root: root, UpdatesDigest: ul.Digest(), ConfigHash: f.cfg}, ul.Marshal())
		f.epoch++
	}
	return f.log.Checkpoint(t)
}

// lie adds the next epoch and returns its checkpoint: the record's root
// is that of the tree holding exactly tree, its update list publishes
// list; editRecord and editList may change the record and the list's
// encoding before they are published (nil: leave them). The forger's
// honest tree stays as it was.
func (f *forger) lie(t testing.TB, list, tree []kt.Leaf, editRecord func(*kt.EpochRecord), editList func([]byte) []byte) []byte {
	t.Helper()
	ul := kt.UpdateList{Epoch: f.epoch, Leaves: list}
	rec := &kt.EpochRecord{Epoch: f.epoch, Timestamp: uint64(time.Now().UnixMilli()), Root: rootOf(t, tree), UpdatesDigest: ul.Digest(), ConfigHash: f.cfg}
	if editRecord != nil {
		editRecord(rec)
	}
	raw := ul.Marshal()
	if editList != nil {
		raw = editList(raw)
	}
	f.epoch++
	f.log.append(t, rec, raw)
	return f.log.Checkpoint(t)
}
