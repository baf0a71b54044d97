package kttest

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/transparency-dev/tessera"
	"github.com/transparency-dev/tessera/api/layout"
	"github.com/transparency-dev/tessera/storage/posix"
	"golang.org/x/mod/sumdb/note"

	"github.com/quicprochat/qpc/kt"
)

// ForgedLog is a log a lying server keeps: real tlog-tiles (Tessera's
// POSIX driver, as kt uses) signed with the log's key, holding whatever
// entries the test appends, and update lists of the test's choosing.
type ForgedLog struct {
	dir      string
	app      *tessera.Appender
	reader   tessera.LogReader
	verifier note.Verifier
	mu       sync.Mutex
	updates  map[uint64][]byte
	size     uint64
}

// ForgedLogOptions are NewForgedLog's options; the zero value is a log
// without witnesses.
type ForgedLogOptions struct {
	// WitnessPolicy, if set, is a witness policy (the text
	// tessera.NewWitnessGroupFromPolicy reads) whose witnesses each
	// checkpoint is submitted to; the checkpoint is published with
	// whatever cosignatures they give (fail open).
	WitnessPolicy string
}

// NewForgedLog starts an empty forged log signed by signer; it stops when
// the test ends.
func NewForgedLog(t testing.TB, signer note.Signer, verifier note.Verifier, opts ForgedLogOptions) *ForgedLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	dir := filepath.Join(t.TempDir(), "forged-log")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		cancel()
		t.Fatal(err)
	}
	driver, err := posix.New(ctx, posix.Config{Path: dir})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ao := tessera.NewAppendOptions().
		WithCheckpointSigner(signer).WithBatching(1, time.Millisecond).WithCheckpointInterval(100 * time.Millisecond)
	if opts.WitnessPolicy != "" {
		group, err := tessera.NewWitnessGroupFromPolicy([]byte(opts.WitnessPolicy))
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		ao = ao.WithWitnesses(group, &tessera.WitnessOptions{Timeout: 5 * time.Second, FailOpen: true})
	}
	app, shutdown, reader, err := tessera.NewAppender(ctx, driver, ao)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel2()
		shutdown(c)
		cancel()
	})
	return &ForgedLog{dir: dir, app: app, reader: reader, verifier: verifier, updates: map[uint64][]byte{}}
}

// Handler serves the log under /kt as the server's kt_listen does: its
// tiles, entry bundles and checkpoint, and the update lists appended.
func (f *ForgedLog) Handler() http.Handler {
	tiles := kt.TilesHandler(f.dir, "/kt")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	})
}

// ReadTile reads a tile of the log from its directory, the full tile if
// the partial one is gone (a tclient.TileFetcher).
func (f *ForgedLog) ReadTile(_ context.Context, level, index uint64, p uint8) ([]byte, error) {
	b, err := kt.ReadLogResource(f.dir, layout.TilePath(level, index, p))
	if p != 0 && errors.Is(err, kt.ErrResource) {
		return kt.ReadLogResource(f.dir, layout.TilePath(level, index, 0))
	}
	return b, err
}

// Append appends any bytes as the next log entry and publishes list as
// its update list (nil: none, its URL answers 404).
func (f *ForgedLog) Append(t testing.TB, entry, list []byte) {
	t.Helper()
	idx, err := f.app.Add(context.Background(), tessera.NewEntry(entry))()
	if err != nil {
		t.Fatal(err)
	}
	if idx.Index != f.size {
		t.Fatalf("forged entry landed at %d, want %d", idx.Index, f.size)
	}
	f.size++
	if list != nil {
		f.mu.Lock()
		f.updates[idx.Index] = list
		f.mu.Unlock()
	}
}

// Size is the number of entries appended.
func (f *ForgedLog) Size() uint64 { return f.size }

// Checkpoint waits (up to 20 seconds: witnesses may be asked first) for
// the published checkpoint of every entry appended and returns it, with
// any cosignatures.
func (f *ForgedLog) Checkpoint(t testing.TB) []byte {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		raw, err := f.reader.ReadCheckpoint(context.Background())
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
