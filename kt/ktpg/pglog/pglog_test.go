package pglog_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/api/layout"
	tclient "github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"

	"github.com/quicprochat/qpc/internal/pgtest"
	"github.com/quicprochat/qpc/internal/pgtx"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/ktpg/pglog"
	"github.com/quicprochat/qpc/kt/ktstoretest"
	"github.com/quicprochat/qpc/kt/kttest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// pool connects a pool to url, closed when t ends.
func pool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	p, err := pgtx.Open(context.Background(), url, 8, "qpc-pglog-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func open(t testing.TB, p *pgxpool.Pool, c kt.LogConfig, o pglog.Options) *pglog.Log {
	t.Helper()
	l, err := pglog.Open(context.Background(), p, c, o)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func keys(t testing.TB) (kt.LogConfig, note.Verifier) {
	t.Helper()
	k := kttest.NewKeys(t, "pglog.example/log")
	return kt.LogConfig{Signer: k.Signer}, k.Verifier
}

// tokenLease makes a lease of the simplest kind in p, a token that is 1
// until the test moves it on (UPDATE lease SET token = ...), and returns
// the fence of a holder of token: it refuses once the token moved on.
func tokenLease(t testing.TB, p *pgxpool.Pool) func(token int64) pglog.Fence {
	t.Helper()
	if _, err := p.Exec(context.Background(), `CREATE TABLE lease (id int PRIMARY KEY, token bigint NOT NULL);
		INSERT INTO lease VALUES (1, 1)`); err != nil {
		t.Fatal(err)
	}
	return func(token int64) pglog.Fence {
		return func(ctx context.Context, tx pgx.Tx) error {
			var cur int64
			if err := tx.QueryRow(ctx, `SELECT token FROM lease WHERE id = 1 FOR SHARE`).Scan(&cur); err != nil {
				return err
			}
			if cur != token {
				return fmt.Errorf("lease token %d is no longer current (%d)", token, cur)
			}
			return nil
		}
	}
}

// TestConformance runs kt/ktstoretest's log suite on PostgreSQL.
func TestConformance(t *testing.T) {
	ktstoretest.RunLog(t, func(t *testing.T) ktstoretest.LogStorage {
		p := pool(t, pgtest.DB(t))
		return func(t *testing.T, c kt.LogConfig) kt.LogDriver { return open(t, p, c, pglog.Options{}) }
	})
}

// entryOf is the i-th entry of the comparison: lengths vary from 1 to a
// few hundred bytes, so that bundles are not uniform.
func entryOf(i int) []byte {
	return bytes.Repeat(fmt.Appendf(nil, "epoch %d;", i), 1+i%37)
}

// resources lists the tlog-tiles resources (tile/...) of the POSIX log in
// dir, as relative paths.
func resources(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(filepath.Join(dir, "tile"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		out = append(out, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// TestSameAsPOSIX builds the same log in Tessera's POSIX driver and in
// pglog and compares, byte for byte, every tile and bundle the POSIX
// driver wrote (its partial versions too), the resources a client of the
// final tree reads, and the checkpoint. Past one full bundle and into a
// level 1 tile.
func TestSameAsPOSIX(t *testing.T) {
	const n = layout.EntryBundleWidth + 17
	ctx := context.Background()
	c, v := keys(t)
	dir := t.TempDir()
	px, err := kt.OpenPOSIXLog(ctx, dir, c)
	if err != nil {
		t.Fatal(err)
	}
	pg := open(t, pool(t, pgtest.DB(t)), c, pglog.Options{})
	defer pg.Close()
	// Each log gets the entries in order; the two logs fill at once.
	var wg sync.WaitGroup
	for name, l := range map[string]kt.LogDriver{"posix": px, "pglog": pg} {
		wg.Go(func() {
			for i := range n {
				idx, err := l.Append(ctx, entryOf(i))
				if err != nil || idx != uint64(i) {
					t.Errorf("%s: Append %d = %d, %v", name, i, idx, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	// The POSIX driver publishes its checkpoint within its interval.
	var pxcp []byte
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		raw, err := px.ReadCheckpoint(ctx)
		if err == nil {
			cp, err := kt.OpenCheckpoint(raw, v)
			if err != nil {
				t.Fatal(err)
			}
			if cp.Size == n {
				pxcp = raw
				break
			}
		}
		if time.Now().After(end) {
			t.Fatalf("POSIX driver: no checkpoint of %d entries", n)
		}
	}
	if err := px.Close(); err != nil {
		t.Fatal(err)
	}
	pgcp, err := pg.ReadCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a, err := kt.OpenCheckpoint(pxcp, v)
	if err != nil {
		t.Fatal(err)
	}
	b, err := kt.OpenCheckpoint(pgcp, v)
	if err != nil {
		t.Fatalf("pglog's checkpoint does not verify: %v", err)
	}
	if a.Size != b.Size || a.Root != b.Root || a.Origin != b.Origin {
		t.Fatalf("checkpoints differ: posix %d %x, pglog %d %x", a.Size, a.Root, b.Size, b.Root)
	}
	// Ed25519 note signatures are deterministic and the note carries no
	// timestamp: the checkpoints are the same bytes.
	if !bytes.Equal(pxcp, pgcp) {
		t.Fatalf("checkpoints differ:\n%s\n%s", pxcp, pgcp)
	}
	files := resources(t, dir)
	t.Logf("%d POSIX resources compared", len(files))
	if len(files) < 5 {
		t.Fatalf("the POSIX log has only %d resources: %q", len(files), files)
	}
	for _, rel := range files {
		want, err := kt.ReadLogResource(dir, rel)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pg.ReadResource(rel)
		if err != nil {
			t.Fatalf("pglog lacks %s: %v", rel, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s differs: pglog %d bytes, posix %d bytes", rel, len(got), len(want))
		}
	}
	// What a client of the final tree reads: every tile and bundle at
	// the widths the tree's size gives them.
	want := []string{
		layout.EntriesPath(0, 0), layout.EntriesPath(1, 17),
		layout.TilePath(0, 0, 0), layout.TilePath(0, 1, 17), layout.TilePath(1, 0, 1),
	}
	for _, rel := range want {
		if !strings.Contains(strings.Join(files, " "), rel) {
			t.Fatalf("the POSIX log has no %s: %q", rel, files)
		}
	}
	for _, rel := range []string{layout.TilePath(0, 2, 0), layout.TilePath(0, 1, 18), layout.TilePath(1, 0, 2), layout.EntriesPath(1, 18), layout.EntriesPath(2, 1)} {
		if _, err := pg.ReadResource(rel); !errors.Is(err, kt.ErrResource) {
			t.Fatalf("pglog serves %s beyond the tree: %v", rel, err)
		}
	}
}

// TestTwoNodesConsecutive: appends through two Logs (two nodes, two
// pools) on one database get distinct, consecutive indices, and both
// nodes read the same log.
func TestTwoNodesConsecutive(t *testing.T) {
	url := pgtest.DB(t)
	c, v := keys(t)
	nodes := []*pglog.Log{open(t, pool(t, url), c, pglog.Options{}), open(t, pool(t, url), c, pglog.Options{})}
	const per = 20
	var (
		mu  sync.Mutex
		got = map[uint64][]byte{}
		wg  sync.WaitGroup
	)
	for ni, l := range nodes {
		for i := range per {
			wg.Go(func() {
				e := fmt.Appendf(nil, "node %d entry %d", ni, i)
				idx, err := l.Append(context.Background(), e)
				if err != nil {
					t.Errorf("node %d Append %d: %v", ni, i, err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if prev, dup := got[idx]; dup {
					t.Errorf("%q and %q both at index %d", prev, e, idx)
				}
				got[idx] = e
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for i := range uint64(2 * per) {
		if got[i] == nil {
			t.Fatalf("no append landed at index %d of %d", i, 2*per)
		}
	}
	for ni, l := range nodes {
		raw, err := l.ReadCheckpoint(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		cp, err := kt.OpenCheckpoint(raw, v)
		if err != nil || cp.Size != 2*per {
			t.Fatalf("node %d's checkpoint: %v, %v; want size %d", ni, cp, err, 2*per)
		}
		for i := range uint64(2 * per) {
			b, err := l.ReadEntryBundle(context.Background(), 0, uint8(2*per))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(b, got[i]) {
				t.Fatalf("node %d: bundle lacks entry %d", ni, i)
			}
		}
	}
}

// snapshot is every resource of a pglog log of at most 300 entries.
func snapshot(t *testing.T, l *pglog.Log) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	out := map[string][]byte{}
	cp, err := l.ReadCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out["checkpoint"] = cp
	size, err := l.IntegratedSize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out["size"] = fmt.Appendf(nil, "%d", size)
	for _, rel := range []string{layout.EntriesPath(0, 0), layout.TilePath(0, 0, 0), layout.TilePath(1, 0, 1)} {
		out[rel], _ = l.ReadResource(rel)
	}
	for p := 1; p < 256; p++ {
		for _, rel := range []string{layout.EntriesPath(0, uint8(p)), layout.TilePath(0, 0, uint8(p))} {
			if b, err := l.ReadResource(rel); err == nil {
				out[rel] = b
			}
		}
	}
	return out
}

// TestAttackFencedAppendLeavesLogUnchanged plays a sequencer that lost
// its lease while paused: another node took the lease over (a new
// fencing token in a lease row) and the old one wakes up and appends.
// Its fence, run inside the append's transaction, sees the token moved
// on: the append must fail with ErrFenced and leave the log exactly as it
// was (size, checkpoint, every tile and bundle), and the new holder's
// next append lands at the next index, not a forked one.
func TestAttackFencedAppendLeavesLogUnchanged(t *testing.T) {
	ctx := context.Background()
	url := pgtest.DB(t)
	p := pool(t, url)
	fenceFor := tokenLease(t, p)
	c, v := keys(t)
	old := open(t, p, c, pglog.Options{Fence: fenceFor(1)})
	for i := range 5 {
		if _, err := old.Append(ctx, entryOf(i)); err != nil {
			t.Fatal(err)
		}
	}
	// The takeover: node B holds token 2 now.
	if _, err := p.Exec(ctx, `UPDATE lease SET token = 2 WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	newer := open(t, pool(t, url), c, pglog.Options{Fence: fenceFor(2)})
	before := snapshot(t, newer)
	idx, err := old.Append(ctx, []byte("forked epoch"))
	if !errors.Is(err, pglog.ErrFenced) {
		t.Fatalf("the former holder's append: index %d, %v; want ErrFenced", idx, err)
	}
	if _, err := old.AppendFenced(ctx, []byte("forked epoch"), fenceFor(1)); !errors.Is(err, pglog.ErrFenced) {
		t.Fatalf("the former holder's AppendFenced: %v; want ErrFenced", err)
	}
	after := snapshot(t, newer)
	if len(before) != len(after) {
		t.Fatalf("the refused append changed the resources: %d before, %d after", len(before), len(after))
	}
	for k, b := range before {
		if !bytes.Equal(b, after[k]) {
			t.Fatalf("the refused append changed %s", k)
		}
	}
	idx, err = newer.Append(ctx, []byte("epoch of the new holder"))
	if err != nil || idx != 5 {
		t.Fatalf("the new holder's append: index %d, %v; want 5", idx, err)
	}
	raw, err := newer.ReadCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cp, err := kt.OpenCheckpoint(raw, v); err != nil || cp.Size != 6 {
		t.Fatalf("checkpoint after the new holder's append: %v, %v", cp, err)
	}
	b, err := newer.ReadEntryBundle(ctx, 0, 6)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("forked epoch")) {
		t.Fatal("the fenced entry is in the log")
	}
}

// TestEntryTooLong: an entry a bundle cannot hold is refused, and the log
// is unchanged.
func TestEntryTooLong(t *testing.T) {
	c, _ := keys(t)
	l := open(t, pool(t, pgtest.DB(t)), c, pglog.Options{})
	if _, err := l.Append(context.Background(), make([]byte, 1<<16)); !errors.Is(err, pglog.ErrEntryTooLong) {
		t.Fatalf("Append of 65536 bytes: %v, want ErrEntryTooLong", err)
	}
	if idx, err := l.Append(context.Background(), make([]byte, 1<<16-1)); err != nil || idx != 0 {
		t.Fatalf("Append of 65535 bytes: %d, %v", idx, err)
	}
}

// TestReadersSeeProvableCheckpoints: while one node appends, a reader on
// another node (its own pool) only ever sees checkpoints whose tiles and
// bundles are all there: the newest entry's bundle holds it and its
// inclusion proof, built from the tiles, verifies against the
// checkpoint's root (RFC 6962 §2.1.1).
func TestReadersSeeProvableCheckpoints(t *testing.T) {
	url := pgtest.DB(t)
	c, v := keys(t)
	w := open(t, pool(t, url), c, pglog.Options{})
	r := open(t, pool(t, url), c, pglog.Options{})
	const n = layout.EntryBundleWidth + 14 // into a second tile
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			if _, err := w.Append(context.Background(), entryOf(i)); err != nil {
				t.Errorf("Append %d: %v", i, err)
				return
			}
		}
	}()
	ctx := context.Background()
	checked := 0
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		default:
		}
		raw, err := r.ReadCheckpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cp, err := kt.OpenCheckpoint(raw, v)
		if err != nil {
			t.Fatal(err)
		}
		if cp.Size == 0 {
			continue
		}
		last := cp.Size - 1
		eb, err := tclient.GetEntryBundle(ctx, r.ReadEntryBundle, last/layout.EntryBundleWidth, cp.Size)
		if err != nil {
			t.Fatalf("checkpoint of %d entries: bundle of its last entry: %v", cp.Size, err)
		}
		e := eb.Entries[last%layout.EntryBundleWidth]
		if !bytes.Equal(e, entryOf(int(last))) {
			t.Fatalf("entry %d = %q", last, e)
		}
		pb, err := tclient.NewProofBuilder(ctx, cp.Size, r.ReadTile)
		if err != nil {
			t.Fatalf("checkpoint of %d entries: tiles: %v", cp.Size, err)
		}
		p, err := pb.InclusionProof(ctx, last)
		if err != nil {
			t.Fatalf("checkpoint of %d entries: inclusion proof: %v", cp.Size, err)
		}
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, last, cp.Size, rfc6962.DefaultHasher.HashLeaf(e), p, cp.Root[:]); err != nil {
			t.Fatalf("checkpoint of %d entries does not prove its last entry: %v", cp.Size, err)
		}
		checked++
		time.Sleep(time.Millisecond) // leave the appender CPU on a small machine
	}
	if t.Failed() {
		return
	}
	if size, err := r.IntegratedSize(ctx); err != nil || size != n {
		t.Fatalf("IntegratedSize %d, %v; want %d", size, err, n)
	}
	t.Logf("%d checkpoints checked while appending", checked)
}
