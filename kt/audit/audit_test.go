package audit

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/kttest"
)

// recordOf returns the record lookups are answered under now.
func recordOf(t testing.TB, d *kt.Directory) *kt.EpochRecord {
	t.Helper()
	p, err := d.Lookup(context.Background(), "nobody", 0)
	if err != nil {
		t.Fatal(err)
	}
	r, err := kt.ParseEpochRecord(p.Epoch.Record)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestAuditHonestLog: a real directory over many epochs, with publishes
// of new labels and new versions of old ones, read over HTTP: the
// auditor follows it at irregular steps, accepts every epoch and holds
// the same root as the directory.
func TestAuditHonestLog(t *testing.T) {
	ctx := context.Background()
	k := newKeys(t)
	d := kttest.OpenDirectory(t, t.TempDir(), k)
	cfg := d.Config()
	a := openAuditor(t, filepath.Join(t.TempDir(), "audit.db"), Options{
		Log: HTTPLog(serve(t, d.Handler("/kt")), nil), Verifier: k.Verifier, ConfigHash: cfg.Hash(),
	})
	var tickTime, auditTime time.Duration
	var ticks int
	var audited uint64
	for i := range 30 {
		var labels []string
		for j := range i % 4 {
			labels = append(labels, fmt.Sprintf("user%d", (i*3+j)%7))
		}
		start := time.Now()
		tick(t, d, labels...)
		tickTime += time.Since(start)
		ticks++
		if i%7 != 3 && i != 29 {
			continue
		}
		start = time.Now()
		cp, err := a.Follow(ctx)
		if err != nil {
			t.Fatalf("epoch %d: %v", i+1, err)
		}
		auditTime += time.Since(start)
		want := recordOf(t, d)
		if cp.Size != want.Epoch+1 || a.Size() != cp.Size {
			t.Fatalf("followed to a checkpoint of size %d, audited %d, the directory serves epoch %d", cp.Size, a.Size(), want.Epoch)
		}
		root, err := a.Root()
		if err != nil {
			t.Fatal(err)
		}
		if root != want.Root {
			t.Fatalf("epoch %d: the auditor's root %x, the directory's %x", want.Epoch, root[:8], want.Root[:8])
		}
		audited = cp.Size
	}
	// The same checkpoint again, and an older one, are consistent.
	cp, err := d.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Audit(ctx, cp.Raw); err != nil {
		t.Fatalf("the audited checkpoint again: %v", err)
	}
	// An auditor reading the directory in process agrees, and both
	// report a list the log lacks as fs.ErrNotExist.
	a2 := openAuditor(t, filepath.Join(t.TempDir(), "audit2.db"), Options{Log: DirectoryLog(d), Verifier: k.Verifier})
	if _, err := a2.Follow(ctx); err != nil {
		t.Fatal(err)
	}
	if r1, _ := a.Root(); a2.Size() != a.Size() || r1 != func() [32]byte { r, _ := a2.Root(); return r }() {
		t.Fatal("the in-process auditor disagrees")
	}
	for _, l := range []Log{a.opts.Log, a2.opts.Log} {
		if _, err := l.ReadResource(ctx, kt.UpdatesResource(audited)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("the list of an epoch not yet made: %v", err)
		}
	}
	t.Logf("%d epochs (%d ticks): %.2f ms per Tick, %.2f ms per audited epoch (over HTTP): ratio %.3f",
		audited, ticks, ms(tickTime)/float64(ticks), ms(auditTime)/float64(audited-1), (ms(auditTime)/float64(audited-1))/(ms(tickTime)/float64(ticks)))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// flakyLog fails reads of one update list while fail is set, as a network
// would.
type flakyLog struct {
	Log
	epoch uint64
	fail  atomic.Bool
}

func (l *flakyLog) ReadResource(ctx context.Context, rel string) ([]byte, error) {
	if l.fail.Load() && rel == kt.UpdatesResource(l.epoch) {
		return nil, errors.New("connection reset")
	}
	return l.Log.ReadResource(ctx, rel)
}

// TestAuditRestart: the auditor's tree and position survive a reopen,
// also after an audit that stopped half-way through a checkpoint (the
// log unreachable at one epoch); it resumes there, across entry bundles,
// without replaying anything twice, and still refuses a lie afterwards.
func TestAuditRestart(t *testing.T) {
	ctx := context.Background()
	k := newKeys(t)
	f := newForger(t, k)
	path := filepath.Join(t.TempDir(), "audit.db")
	fl := &flakyLog{Log: HTTPLog(f.log.base, nil), epoch: 200}
	opts := Options{Log: fl, Verifier: k.Verifier}
	a, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Audit(ctx, f.honest(t, 100)); err != nil {
		t.Fatal(err)
	}
	root100, _ := a.Root()
	a.Close()

	if a, err = Open(path, opts); err != nil {
		t.Fatal(err)
	}
	if a.Size() != 100 {
		t.Fatalf("reopened at %d epochs, want 100", a.Size())
	}
	if r, _ := a.Root(); r != root100 {
		t.Fatal("reopened with another root")
	}
	// Up to 300 epochs (bundles 0 and 1 full, 2 partial), the list of
	// epoch 200 unreachable: the epochs before it are kept.
	fl.fail.Store(true)
	cp300 := f.honest(t, 200)
	err = a.Audit(ctx, cp300)
	if err == nil {
		t.Fatal("an audit with an unreachable update list passed")
	}
	if _, isRefusal := errors.AsType[*Error](err); isRefusal {
		t.Fatalf("an unreachable list is not the log's fault: %v", err)
	}
	if a.Size() != 200 {
		t.Fatalf("stopped at %d epochs, want 200", a.Size())
	}
	a.Close()

	fl.fail.Store(false)
	if a, err = Open(path, opts); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.Size() != 200 {
		t.Fatalf("reopened at %d epochs, want 200", a.Size())
	}
	if err := a.Audit(ctx, cp300); err != nil {
		t.Fatal(err)
	}
	if a.Size() != 300 {
		t.Fatalf("at %d epochs, want 300", a.Size())
	}
	var kept []kt.Leaf
	kept = append(kept, f.leaves[1:]...)
	fresh := randomLeaves(4)
	wantRefusal(t, a.Audit(ctx, f.lie(t, fresh, append(kept, fresh...), nil, nil)), 300, CheckRoot)
}
