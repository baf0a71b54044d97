package ktstoretest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/api/layout"
	tclient "github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"

	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/kttest/logkeys"
)

// LogStorage is one fresh, empty place for a log: Open opens a driver
// on it with c, and may be called again after Close to reopen the same
// log. The test arranges cleanup of the storage itself.
type LogStorage func(t *testing.T, c kt.LogConfig) kt.LogDriver

// LogOpener returns a fresh LogStorage for one subtest.
type LogOpener func(t *testing.T) LogStorage

// deadline bounds every wait for a checkpoint: generous, for a loaded
// machine.
const deadline = 30 * time.Second

// RunLog runs every conformance subtest of kt.LogDriver against logs made
// by open.
func RunLog(t *testing.T, open LogOpener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, st LogStorage)
	}{
		{"Empty", testLogEmpty},
		{"AppendInOrder", testLogAppendInOrder},
		{"CheckpointProvesEntries", testLogCheckpointProves},
		{"Resources", testLogResources},
		{"ConcurrentAppends", testLogConcurrentAppends},
		{"ReopenKeepsLog", testLogReopen},
		{"FullBundleAndTile", testLogFullBundle},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, open(t))
		})
	}
}

func logKeys(t *testing.T) (kt.LogConfig, note.Verifier) {
	t.Helper()
	k := logkeys.New(t, "ktstoretest.example/log")
	return kt.LogConfig{Signer: k.Signer}, k.Verifier
}

func closeLog(t *testing.T, l kt.LogDriver) {
	t.Helper()
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func entry(i int) []byte { return fmt.Appendf(nil, "epoch record %d", i) }

func appendN(t *testing.T, l kt.LogDriver, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		idx, err := l.Append(context.Background(), entry(i))
		if err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
		if idx != uint64(i) {
			t.Fatalf("Append %d landed at index %d", i, idx)
		}
	}
}

// awaitCheckpoint polls until a checkpoint of at least size entries is
// published and returns it, verified.
func awaitCheckpoint(t *testing.T, l kt.LogDriver, v note.Verifier, size uint64) *kt.Checkpoint {
	t.Helper()
	ctx := context.Background()
	end := time.Now().Add(deadline)
	for {
		raw, err := l.ReadCheckpoint(ctx)
		switch {
		case err == nil:
			cp, err := kt.OpenCheckpoint(raw, v)
			if err != nil {
				t.Fatalf("published checkpoint does not verify: %v", err)
			}
			if cp.Size >= size {
				return cp
			}
		case !errors.Is(err, fs.ErrNotExist):
			t.Fatalf("ReadCheckpoint: %v", err)
		}
		if time.Now().After(end) {
			t.Fatalf("no checkpoint of %d entries within %v", size, deadline)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkEntries checks, against cp, every entry of the log: its bundle
// holds want(i), and its inclusion proof from the log's tiles verifies
// against cp's root (RFC 6962 §2.1.1).
func checkEntries(t *testing.T, l kt.LogDriver, cp *kt.Checkpoint, want func(i uint64) []byte) {
	t.Helper()
	ctx := context.Background()
	pb, err := tclient.NewProofBuilder(ctx, cp.Size, l.ReadTile)
	if err != nil {
		t.Fatalf("proof builder: %v", err)
	}
	for i := uint64(0); i < cp.Size; i++ {
		eb, err := tclient.GetEntryBundle(ctx, l.ReadEntryBundle, i/layout.EntryBundleWidth, cp.Size)
		if err != nil {
			t.Fatalf("entry bundle of %d: %v", i, err)
		}
		got := eb.Entries[i%layout.EntryBundleWidth]
		if !bytes.Equal(got, want(i)) {
			t.Fatalf("entry %d = %q, want %q", i, got, want(i))
		}
		p, err := pb.InclusionProof(ctx, i)
		if err != nil {
			t.Fatalf("inclusion proof of %d: %v", i, err)
		}
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, i, cp.Size, rfc6962.DefaultHasher.HashLeaf(got), p, cp.Root[:]); err != nil {
			t.Fatalf("entry %d is not in the checkpoint's tree: %v", i, err)
		}
	}
}

func testLogEmpty(t *testing.T, st LogStorage) {
	c, _ := logKeys(t)
	l := st(t, c)
	defer closeLog(t, l)
	n, err := l.IntegratedSize(context.Background())
	if err != nil || n != 0 {
		t.Fatalf("IntegratedSize of a new log = %d, %v", n, err)
	}
	if _, err := l.ReadResource("../../etc/passwd"); !errors.Is(err, kt.ErrResource) {
		t.Fatalf("ReadResource outside tlog-tiles: %v, want ErrResource", err)
	}
}

func testLogAppendInOrder(t *testing.T, st LogStorage) {
	c, v := logKeys(t)
	l := st(t, c)
	defer closeLog(t, l)
	appendN(t, l, 0, 5)
	n, err := l.IntegratedSize(context.Background())
	if err != nil || n != 5 {
		t.Fatalf("IntegratedSize after 5 acknowledged appends = %d, %v", n, err)
	}
	cp := awaitCheckpoint(t, l, v, 5)
	if cp.Origin != c.Signer.Name() {
		t.Fatalf("checkpoint origin %q, want %q", cp.Origin, c.Signer.Name())
	}
}

func testLogCheckpointProves(t *testing.T, st LogStorage) {
	c, v := logKeys(t)
	l := st(t, c)
	defer closeLog(t, l)
	appendN(t, l, 0, 3)
	small := awaitCheckpoint(t, l, v, 3)
	checkEntries(t, l, small, func(i uint64) []byte { return entry(int(i)) })
	appendN(t, l, 3, 7)
	large := awaitCheckpoint(t, l, v, 10)
	checkEntries(t, l, large, func(i uint64) []byte { return entry(int(i)) })
	checkExtends(t, l, small, large)
}

// checkExtends checks, with a consistency proof built from the log's
// tiles, that the tree of newer extends the tree of older (RFC 6962
// §2.1.2).
func checkExtends(t *testing.T, l kt.LogDriver, older, newer *kt.Checkpoint) {
	t.Helper()
	ctx := context.Background()
	pb, err := tclient.NewProofBuilder(ctx, newer.Size, l.ReadTile)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := pb.ConsistencyProof(ctx, older.Size, newer.Size)
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, older.Size, newer.Size, cons, older.Root[:], newer.Root[:]); err != nil {
		t.Fatalf("the log of size %d does not extend the one of size %d: %v", newer.Size, older.Size, err)
	}
}

func testLogResources(t *testing.T, st LogStorage) {
	c, v := logKeys(t)
	l := st(t, c)
	defer closeLog(t, l)
	appendN(t, l, 0, 4)
	cp := awaitCheckpoint(t, l, v, 4)
	ctx := context.Background()
	raw, err := l.ReadResource("checkpoint")
	if err != nil {
		t.Fatalf("ReadResource(checkpoint): %v", err)
	}
	if got, err := kt.OpenCheckpoint(raw, v); err != nil || got.Size < cp.Size {
		t.Fatalf("ReadResource(checkpoint) = size %v, %v", got, err)
	}
	p := uint8(cp.Size % layout.EntryBundleWidth)
	for _, c := range []struct {
		rel  string
		read func() ([]byte, error)
	}{
		{layout.EntriesPath(0, p), func() ([]byte, error) { return l.ReadEntryBundle(ctx, 0, p) }},
		{layout.TilePath(0, 0, p), func() ([]byte, error) { return l.ReadTile(ctx, 0, 0, p) }},
	} {
		got, err := l.ReadResource(c.rel)
		if err != nil {
			t.Fatalf("ReadResource(%s): %v", c.rel, err)
		}
		want, err := c.read()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("ReadResource(%s) differs from the typed read (%v)", c.rel, err)
		}
	}
	for _, rel := range []string{"", "tile", "tile/0/x001", "tile/entries/1000", "checkpoint/../checkpoint", "/checkpoint"} {
		if _, err := l.ReadResource(rel); !errors.Is(err, kt.ErrResource) {
			t.Fatalf("ReadResource(%q): %v, want ErrResource", rel, err)
		}
	}
}

func testLogConcurrentAppends(t *testing.T, st LogStorage) {
	c, v := logKeys(t)
	l := st(t, c)
	defer closeLog(t, l)
	const n = 24
	idx := make([]uint64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var err error
			if idx[i], err = l.Append(context.Background(), entry(i)); err != nil {
				t.Errorf("Append %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	at := map[uint64]int{}
	for i, x := range idx {
		if j, dup := at[x]; dup {
			t.Fatalf("appends %d and %d both at index %d", j, i, x)
		}
		if x >= n {
			t.Fatalf("append %d at index %d of a log of %d", i, x, n)
		}
		at[x] = i
	}
	cp := awaitCheckpoint(t, l, v, n)
	checkEntries(t, l, cp, func(i uint64) []byte { return entry(at[i]) })
}

func testLogReopen(t *testing.T, st LogStorage) {
	c, v := logKeys(t)
	l := st(t, c)
	appendN(t, l, 0, 6)
	before := awaitCheckpoint(t, l, v, 6)
	closeLog(t, l)
	l = st(t, c)
	defer closeLog(t, l)
	n, err := l.IntegratedSize(context.Background())
	if err != nil || n != 6 {
		t.Fatalf("IntegratedSize after reopening = %d, %v; want 6", n, err)
	}
	appendN(t, l, 6, 2) // the next index follows the kept ones
	after := awaitCheckpoint(t, l, v, 8)
	checkEntries(t, l, after, func(i uint64) []byte { return entry(int(i)) })
	checkExtends(t, l, before, after) // the reopened log extends the old one
}

// testLogFullBundle: past one full entry bundle and hash tile (256), so
// that full and partial resources are both read.
func testLogFullBundle(t *testing.T, st LogStorage) {
	c, v := logKeys(t)
	l := st(t, c)
	defer closeLog(t, l)
	const n = layout.EntryBundleWidth + 3
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	idx := make([]uint64, n)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			var err error
			if idx[i], err = l.Append(context.Background(), entry(i)); err != nil {
				t.Errorf("Append %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	at := make(map[uint64]int, n)
	for i, x := range idx {
		at[x] = i
	}
	if len(at) != n {
		t.Fatalf("%d distinct indices from %d appends", len(at), n)
	}
	cp := awaitCheckpoint(t, l, v, n)
	checkEntries(t, l, cp, func(i uint64) []byte { return entry(at[i]) })
	full, err := l.ReadResource(layout.EntriesPath(0, 0))
	if err != nil {
		t.Fatalf("full entry bundle: %v", err)
	}
	b, err := l.ReadEntryBundle(context.Background(), 0, 0)
	if err != nil || !bytes.Equal(full, b) {
		t.Fatalf("full bundle through ReadResource and ReadEntryBundle differ (%v)", err)
	}
}
