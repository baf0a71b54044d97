package kt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"testing"
	"time"
)

// heapInUse is the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestAttackKTPublishQueueBound: publishes of the largest values, five
// times the queue's bound, as fast as they come and with no epoch to
// drain them. The queue takes DefaultMaxPending and refuses the rest with
// ErrQueueFull, and the memory held stays within the bound's values.
func TestAttackKTPublishQueueBound(t *testing.T) {
	d := newTestDir(t) // no Start: nothing drains the queue
	value := bytes.Repeat([]byte{0xa5}, MaxValueLen)
	before := heapInUse()
	accepted, full := 0, 0
	for i := range 5 * DefaultMaxPending {
		_, err := d.Enqueue(fmt.Sprintf("flood%05d", i), value)
		switch {
		case err == nil:
			accepted++
		case errors.Is(err, ErrQueueFull):
			full++
		default:
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	grew := int64(heapInUse()) - int64(before)
	t.Logf("%d publishes queued, %d refused; heap grew %.1f MiB", accepted, full, float64(grew)/(1<<20))
	if accepted != DefaultMaxPending || full != 4*DefaultMaxPending {
		t.Fatalf("queued %d, refused %d; want %d and %d", accepted, full, DefaultMaxPending, 4*DefaultMaxPending)
	}
	// Each queued update holds its value and a few hundred bytes.
	if limit := int64(DefaultMaxPending) * (MaxValueLen + 1024); grew > limit {
		t.Fatalf("the queue holds %d bytes, more than its bound %d", grew, limit)
	}
	// An epoch drains the queue, and publishing works again.
	if _, err := d.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Enqueue("after", []byte("v")); err != nil {
		t.Fatalf("a publish after the queue drained: %v", err)
	}
	d.pendMu.Lock()
	q, r := d.queued, len(d.reserved)
	d.pendMu.Unlock()
	if q != 1 || r != 1 {
		t.Fatalf("after the epoch: %d queued, %d labels reserved; want 1 and 1", q, r)
	}
}

// TestAttackKTTimedOutPublish: a publish whose caller gave up before any
// epoch took it is not published later (its caller was told it was not),
// and the label's next publish takes the version it would have had.
func TestAttackKTTimedOutPublish(t *testing.T) {
	d := newTestDir(t) // epochs only when the test ticks
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := d.Publish(ctx, "alice", []byte("given up"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish that timed out: %v", err)
	}
	if _, err := d.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v, _ := d.LatestVersion("alice"); v != 0 {
		t.Fatalf("the publish the caller gave up on was published later, as version %d", v)
	}
	if !errors.Is(err, ErrWithdrawn) {
		t.Fatalf("the error does not say the publish was withdrawn: %v", err)
	}
	got := d.publish(t, "alice", []byte("v1"))
	if got[0].Version != 1 {
		t.Fatalf("next publish got version %d, want 1", got[0].Version)
	}
	d.pendMu.Lock()
	q, r := d.queued, len(d.reserved)
	d.pendMu.Unlock()
	if q != 0 || r != 0 {
		t.Fatalf("%d queued, %d labels reserved after everything settled", q, r)
	}
}

// TestKTPublishTakenByEpochNotWithdrawn: once an epoch has taken the
// update, a caller that gives up still gets the epoch's outcome: the
// version is published and the answer says so.
func TestKTPublishTakenByEpochNotWithdrawn(t *testing.T) {
	d := newTestDir(t)
	release := make(chan struct{})
	took := make(chan struct{})
	d.Directory.opts.afterCommit = func(uint64) error { close(took); <-release; return nil }
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	var p Published
	go func() {
		var err error
		p, err = d.Publish(ctx, "alice", []byte("v1"))
		res <- err
	}()
	for {
		d.pendMu.Lock()
		n := len(d.pending)
		d.pendMu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	tick := make(chan error, 1)
	go func() { _, err := d.Tick(context.Background()); tick <- err }()
	<-took
	cancel()
	time.Sleep(20 * time.Millisecond)
	close(release)
	if err := <-res; err != nil || p.Version != 1 {
		t.Fatalf("publish taken by an epoch, then given up: version %d, %v", p.Version, err)
	}
	if err := <-tick; err != nil {
		t.Fatal(err)
	}
}

// TestAttackKTVersionCap: a label at DefaultMaxVersions versions is
// refused another with ErrTooManyVersions, whether the publishes come one
// at a time or queued together; other labels are not affected.
func TestAttackKTVersionCap(t *testing.T) {
	d := newTestDir(t)
	values := make([][]byte, DefaultMaxVersions)
	for i := range values {
		values[i] = []byte(fmt.Sprintf("v%d", i+1))
	}
	// Half in one epoch, half in the next: the cap counts the versions
	// reserved in the queue as well as the committed ones.
	d.publish(t, "mallory", values[:DefaultMaxVersions/2]...)
	d.publish(t, "mallory", values[DefaultMaxVersions/2:]...)
	if v, _ := d.LatestVersion("mallory"); v != DefaultMaxVersions {
		t.Fatalf("latest version %d, want %d", v, DefaultMaxVersions)
	}
	if _, err := d.Enqueue("mallory", []byte("one more")); !errors.Is(err, ErrTooManyVersions) {
		t.Fatalf("publish past the cap: %v, want ErrTooManyVersions", err)
	}
	d.publish(t, "alice", []byte("v1"))
	if DefaultMaxVersions >= MaxVersion>>8 {
		t.Fatalf("the default cap %d is not well below the format's %d", DefaultMaxVersions, MaxVersion)
	}
}

// TestKTVersionCapQueued: publishes queued together past the cap are
// refused at Enqueue, not published.
func TestKTVersionCapQueued(t *testing.T) {
	s, v, vkey, k := newKeys(t, "kt.test/log")
	d := openTestDir(t, t.TempDir(), s, v, vkey, k)
	defer d.Close()
	d.Directory.opts.MaxVersions = 3
	d.publish(t, "bob", []byte("1"), []byte("2"))
	if _, err := d.Enqueue("bob", []byte("3")); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Enqueue("bob", []byte("4")); !errors.Is(err, ErrTooManyVersions) {
		t.Fatalf("fourth version with a cap of 3: %v", err)
	}
	if _, err := d.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v, _ := d.LatestVersion("bob"); v != 3 {
		t.Fatalf("latest %d, want 3", v)
	}
}

// TestAttackKTLookupFlood: the same lookup, again and again, costs VRF
// proofs only the first time (the absence set, then the cache), and a
// budget refuses the lookups of new labels past it before any proof is
// computed.
func TestAttackKTLookupFlood(t *testing.T) {
	d := newTestDir(t)
	d.publish(t, "alice", []byte("v1"))
	ctx := context.Background()
	start := d.ProofsComputed()
	const rounds = 100
	for range rounds {
		if _, err := d.Lookup(ctx, "nobody", 0); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Lookup(ctx, "alice", 0); err != nil {
			t.Fatal(err)
		}
	}
	spent := d.ProofsComputed() - start
	// The first lookup of each proves its absence set once: 20 versions
	// for a label with none, 19 for alice at version 1.
	want := uint64(len(absentSet(0)) + len(absentSet(1)))
	t.Logf("%d lookups computed %d VRF proofs", 2*rounds, spent)
	if spent != want {
		t.Fatalf("%d repeated lookups computed %d VRF proofs, want %d", 2*rounds, spent, want)
	}
	// Lookups of labels nobody asked for, under a budget of 100 proofs:
	// five are answered, the sixth is refused without computing any.
	errBudget := errors.New("budget spent")
	left := 100
	budget := func(n int) error {
		if n > left {
			return errBudget
		}
		left -= n
		return nil
	}
	answered := 0
	before := d.ProofsComputed()
	for i := range 50 {
		_, err := d.LookupCharged(ctx, fmt.Sprintf("stranger%d", i), 0, budget)
		if errors.Is(err, errBudget) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		answered++
	}
	if got := d.ProofsComputed() - before; answered != 5 || got != 100 {
		t.Fatalf("under a 100-proof budget: %d lookups answered, %d proofs computed; want 5 and 100", answered, got)
	}
}

// TestProofCacheBound: the cache holds at most its size, evicting the
// least recently used, and its proofs are the ones computed afresh.
func TestProofCacheBound(t *testing.T) {
	s, v, vkey, k := newKeys(t, "kt.test/log")
	d := openTestDir(t, t.TempDir(), s, v, vkey, k)
	defer d.Close()
	d.Directory.proofs = newProofCache(30)
	for ver := uint32(1); ver <= 40; ver++ {
		d.prove("carol", ver)
	}
	if n := d.proofs.len(); n != 30 {
		t.Fatalf("cache holds %d, want 30", n)
	}
	if d.uncached("carol", []uint32{1, 10, 11, 40}) != 2 {
		t.Fatal("the oldest ten were not the ones evicted")
	}
	idx, pi := d.prove("carol", 40)
	beta, want := k.Prove(vrfInput("carol", 40))
	if pi != want || idx != IndexOf(beta) {
		t.Fatal("a cached proof differs from a fresh one")
	}
}

// TestProofCacheMemory measures what one cached proof costs, against
// proofCacheEntryBytes (the figure DefaultProofCache is sized with).
func TestProofCacheMemory(t *testing.T) {
	const n = 20_000
	c := newProofCache(n)
	before := heapInUse()
	var idx Index
	var pi [80]byte
	for i := range n {
		c.put(proofKey(fmt.Sprintf("user%d", i), 1), idx, pi)
	}
	per := (int64(heapInUse()) - int64(before)) / n
	runtime.KeepAlive(c)
	t.Logf("%d bytes per cached proof; %d entries by default: %.1f MiB", per, DefaultProofCache, float64(per*DefaultProofCache)/(1<<20))
	if per > proofCacheEntryBytes*5/4 {
		t.Fatalf("a cached proof costs %d bytes, more than the documented %d", per, proofCacheEntryBytes)
	}
}

// BenchmarkLookupProofCache measures one repeated lookup with and
// without the proof cache, in the same run: VRF proofs computed per
// lookup, time per lookup, and the ratio of the times.
//
//	go test ./kt -run '^$' -bench LookupProofCache -benchtime 200x
func BenchmarkLookupProofCache(b *testing.B) {
	s, v, vkey, k := newKeys(b, "kt.test/log")
	open := func(cache int) *testDir {
		opts := DirectoryOptions{Dir: b.TempDir(), LogSigner: s, LogVerifier: v, VRFKey: k, ProofCache: cache,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
		d, err := OpenDirectory(context.Background(), opts)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { d.Close() })
		td := &testDir{Directory: d, vkey: vkey, opts: opts}
		td.publish(b, "alice", []byte("v1"), []byte("v2"), []byte("v3"))
		return td
	}
	uncached, cached := open(-1), open(DefaultProofCache)
	ctx := context.Background()
	var tUncached, tCached time.Duration
	p0u, p0c := uncached.ProofsComputed(), cached.ProofsComputed()
	for b.Loop() {
		start := time.Now()
		if _, err := uncached.Lookup(ctx, "alice", 0); err != nil {
			b.Fatal(err)
		}
		mid := time.Now()
		if _, err := cached.Lookup(ctx, "alice", 0); err != nil {
			b.Fatal(err)
		}
		tUncached += mid.Sub(start)
		tCached += time.Since(mid)
	}
	n := float64(b.N)
	b.ReportMetric(float64(uncached.ProofsComputed()-p0u)/n, "vrf-proofs/lookup-uncached")
	b.ReportMetric(float64(cached.ProofsComputed()-p0c)/n, "vrf-proofs/lookup-cached")
	b.ReportMetric(float64(tUncached.Microseconds())/n, "µs/lookup-uncached")
	b.ReportMetric(float64(tCached.Microseconds())/n, "µs/lookup-cached")
	b.ReportMetric(float64(tUncached)/float64(tCached), "speedup")
}
