package audit

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/vrf"
	"github.com/transparency-dev/tessera"
	"github.com/transparency-dev/tessera/storage/posix"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/note"
)

type keys struct {
	signer   note.Signer
	verifier note.Verifier
	vkey     string
	vrf      *vrf.PrivateKey
}

func newKeys(t testing.TB) keys {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, "kt.audit.test/log")
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	seed := make([]byte, 32)
	rand.Read(seed)
	k, err := vrf.NewPrivateKey(seed)
	if err != nil {
		t.Fatal(err)
	}
	return keys{s, v, vkey, k}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// openDir opens a real directory in dir, without its epoch loop: the test
// makes epochs with tick.
func openDir(t testing.TB, dir string, k keys) *kt.Directory {
	t.Helper()
	d, err := kt.OpenDirectory(context.Background(), kt.DirectoryOptions{
		Dir: dir, LogSigner: k.signer, LogVerifier: k.verifier, VRFKey: k.vrf, Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

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

// forgedLog is a log a lying server keeps: real tlog-tiles (Tessera's
// POSIX driver, as kt uses) signed with the log's key, holding whatever
// epoch records the test appends, and update lists of the test's
// choosing, served over HTTP as the real server serves them.
type forgedLog struct {
	dir      string
	app      *tessera.Appender
	reader   tessera.LogReader
	base     string
	mu       sync.Mutex
	updates  map[uint64][]byte
	size     uint64
	verifier note.Verifier
}

func newForgedLog(t testing.TB, k keys) *forgedLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	dir := filepath.Join(t.TempDir(), "forged-log")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	driver, err := posix.New(ctx, posix.Config{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	app, shutdown, reader, err := tessera.NewAppender(ctx, driver, tessera.NewAppendOptions().
		WithCheckpointSigner(k.signer).WithBatching(1, time.Millisecond).WithCheckpointInterval(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel2()
		shutdown(c)
		cancel()
	})
	f := &forgedLog{dir: dir, app: app, reader: reader, updates: map[uint64][]byte{}, verifier: k.verifier}
	tiles := kt.TilesHandler(dir, "/kt")
	f.base = serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e, ok := kt.ParseUpdatesPath(strings.TrimPrefix(r.URL.Path, "/kt/")); ok {
			f.mu.Lock()
			b, ok := f.updates[e]
			f.mu.Unlock()
			if !ok {
				http.NotFound(w, r)
				return
			}
			w.Write(b)
			return
		}
		tiles.ServeHTTP(w, r)
	}))
	return f
}

// append appends a record and publishes list (nil: none) as its update
// list.
func (f *forgedLog) append(t testing.TB, rec *kt.EpochRecord, list []byte) {
	t.Helper()
	f.appendRaw(t, rec.Marshal(), list)
}

// appendRaw appends any bytes as the next log entry.
func (f *forgedLog) appendRaw(t testing.TB, entry, list []byte) {
	t.Helper()
	idx, err := f.app.Add(context.Background(), tessera.NewEntry(entry))()
	if err != nil {
		t.Fatal(err)
	}
	if idx.Index != f.size {
		t.Fatalf("forged record landed at %d, want %d", idx.Index, f.size)
	}
	f.size++
	if list != nil {
		f.mu.Lock()
		f.updates[idx.Index] = list
		f.mu.Unlock()
	}
}

// checkpoint waits for the signed checkpoint of every record appended.
func (f *forgedLog) checkpoint(t testing.TB) []byte {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		raw, err := f.reader.ReadCheckpoint(ctx)
		if err == nil {
			cp, err := kt.OpenCheckpoint(raw, f.verifier)
			if err != nil {
				t.Fatal(err)
			}
			if cp.Size == f.size {
				return raw
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no checkpoint of size %d", f.size)
	return nil
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

func newForger(t testing.TB, k keys) *forger {
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
	return f.log.checkpoint(t)
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
	return f.log.checkpoint(t)
}
