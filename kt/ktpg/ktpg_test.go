package ktpg_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/quicprochat/qpc/internal/pglease"
	"github.com/quicprochat/qpc/internal/pgtest"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/audit"
	"github.com/quicprochat/qpc/kt/ktpg"
	"github.com/quicprochat/qpc/kt/kttest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// Short for the tests: an epoch each 100 ms, a lease of 1 s.
const (
	testInterval = 100 * time.Millisecond
	testTTL      = time.Second
	// deadline bounds every wait for a condition: generous, for a loaded
	// machine; the conditions are polled, never slept on.
	deadline = 30 * time.Second
)

type node struct {
	name string
	d    *kt.Directory
	n    *ktpg.Node
	o    kt.DirectoryOptions
}

// openNode opens a directory node on the database at url; start runs its
// epoch loop (the lease, the epochs or the following).
func openNode(t *testing.T, url string, k kttest.Keys, name string, start bool) *node {
	t.Helper()
	o := kt.DirectoryOptions{
		Dir: t.TempDir(), LogSigner: k.Signer, LogVerifier: k.Verifier, VRFKey: k.VRF,
		EpochInterval: testInterval, MinUpdates: 2,
		Logger: slog.New(slog.DiscardHandler),
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	n, err := ktpg.Configure(ctx, url, &o, ktpg.Options{Holder: name, LeaseTTL: testTTL, FallbackPoll: 200 * time.Millisecond, Logger: o.Logger})
	if err != nil {
		t.Fatal(err)
	}
	d, err := kt.OpenDirectory(ctx, o)
	if err != nil {
		n.Close()
		t.Fatalf("node %s: %v", name, err)
	}
	nd := &node{name: name, d: d, n: n, o: o}
	t.Cleanup(func() { nd.d.Close(); nd.n.Close() })
	if start {
		d.Start()
	}
	return nd
}

// kill stops a node as a crash would: its connections go, its lease is
// not released (the release fails on the closed pool).
func (nd *node) kill() {
	nd.n.Close()
	nd.d.Close()
}

func (nd *node) size() uint64 {
	cp, err := nd.d.Checkpoint()
	if err != nil {
		return 0
	}
	return cp.Size
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > deadline {
			t.Fatalf("after %v: %s", deadline, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// sequencer returns the node holding the lease, waiting for one.
func sequencer(t *testing.T, nodes ...*node) *node {
	t.Helper()
	var s *node
	waitFor(t, "a node holds the sequencer lease", func() bool {
		for _, n := range nodes {
			if n.n.Lease.Token() != 0 {
				s = n
				return true
			}
		}
		return false
	})
	return s
}

// checkLookups verifies on every node, with the client's verifier, that
// each label's latest version is the one published, once every node
// serves the same checkpoint.
func checkLookups(t *testing.T, k kttest.Keys, want map[string]kt.Published, values map[string][]byte, nodes ...*node) {
	t.Helper()
	var top uint64
	for _, p := range want {
		top = max(top, p.Epoch)
	}
	waitFor(t, "every node serves the newest epoch", func() bool {
		s := nodes[0].size()
		for _, n := range nodes {
			if n.size() != s || s < top+1 {
				return false
			}
		}
		return true
	})
	for _, n := range nodes {
		v, err := kt.NewVerifierFromConfig(k.VKey, n.d.Config())
		if err != nil {
			t.Fatal(err)
		}
		for label, p := range want {
			proof, err := n.d.Lookup(context.Background(), label, v.KnownSize())
			if err != nil {
				t.Fatalf("node %s: lookup %q: %v", n.name, label, err)
			}
			r, err := v.VerifyLookup(label, proof)
			if err != nil {
				t.Fatalf("node %s: lookup %q does not verify: %v", n.name, label, err)
			}
			if r.Version != p.Version || r.Added != p.Epoch || !bytes.Equal(r.Value, values[label]) {
				t.Fatalf("node %s: %q is version %d added at %d (%q); the publish said version %d at %d",
					n.name, label, r.Version, r.Added, r.Value, p.Version, p.Epoch)
			}
		}
	}
}

// TestNodesPublishAnywhere runs three directory nodes on one database:
// publishes through each land in the one log, every node serves the same
// checkpoint and answers lookups that the client's verifier accepts, and
// the per-label rule (one queued update of a label) holds across nodes:
// two publishes of one label through two nodes get versions 1 and 2.
func TestNodesPublishAnywhere(t *testing.T) {
	url := pgtest.DB(t)
	k := kttest.NewKeys(t, "kt-nodes-test")
	nodes := []*node{openNode(t, url, k, "a", true), openNode(t, url, k, "b", true), openNode(t, url, k, "c", true)}
	seq := sequencer(t, nodes...)
	t.Logf("sequencer: %s", seq.name)

	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	var mu sync.Mutex
	want := map[string]kt.Published{}
	values := map[string][]byte{}
	var wg sync.WaitGroup
	for i, n := range nodes {
		for j := range 4 {
			label := fmt.Sprintf("user-%d-%d", i, j)
			value := []byte("binding of " + label)
			wg.Go(func() {
				p, err := n.d.Publish(ctx, label, value)
				if err != nil {
					t.Errorf("publish %s through %s: %v", label, n.name, err)
					return
				}
				if p.Version != 1 {
					t.Errorf("publish %s: version %d", label, p.Version)
				}
				mu.Lock()
				want[label], values[label] = p, value
				mu.Unlock()
			})
		}
	}
	// One label through two nodes at once: versions 1 and 2, in two
	// epochs (the second waits for the first).
	shared := make([]kt.Published, 2)
	for i := range 2 {
		wg.Go(func() {
			var err error
			if shared[i], err = nodes[i+1].d.Publish(ctx, "shared", fmt.Appendf(nil, "value %d", i)); err != nil {
				t.Errorf("publish shared through %s: %v", nodes[i+1].name, err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	vs := []uint32{shared[0].Version, shared[1].Version}
	slices.Sort(vs)
	if vs[0] != 1 || vs[1] != 2 || shared[0].Epoch == shared[1].Epoch {
		t.Fatalf("two publishes of one label through two nodes: %+v", shared)
	}
	last := 0
	if shared[1].Version == 2 {
		last = 1
	}
	want["shared"], values["shared"] = shared[last], fmt.Appendf(nil, "value %d", last)
	checkLookups(t, k, want, values, nodes...)
}

// TestNodesPublishLatency compares, in one run, the time a publish takes
// through the sequencer and through a node that is not: pairs published
// at once, one through each, so both wait for the same epochs.
func TestNodesPublishLatency(t *testing.T) {
	url := pgtest.DB(t)
	k := kttest.NewKeys(t, "kt-nodes-latency")
	a := openNode(t, url, k, "a", true)
	seq := sequencer(t, a)
	other := openNode(t, url, k, "b", true)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	const rounds = 9
	var viaSeq, viaOther []time.Duration
	for i := range rounds {
		var wg sync.WaitGroup
		var ds, do time.Duration
		for _, side := range []struct {
			n *node
			d *time.Duration
		}{{seq, &ds}, {other, &do}} {
			wg.Go(func() {
				start := time.Now()
				if _, err := side.n.d.Publish(ctx, fmt.Sprintf("%s-%d", side.n.name, i), []byte("v")); err != nil {
					t.Errorf("publish through %s: %v", side.n.name, err)
				}
				*side.d = time.Since(start)
			})
		}
		wg.Wait()
		viaSeq, viaOther = append(viaSeq, ds), append(viaOther, do)
	}
	slices.Sort(viaSeq)
	slices.Sort(viaOther)
	ms, mo := viaSeq[rounds/2], viaOther[rounds/2]
	t.Logf("publish latency, median of %d (epoch interval %v): through the sequencer %v, through another node %v (ratio %.2f)",
		rounds, testInterval, ms, mo, float64(mo)/float64(ms))

	// Lookups, interleaved: the sequencer reads the tree's top levels
	// from memory, the other node every node from the database.
	var lkSeq, lkOther []time.Duration
	for i := range 3 * rounds {
		for _, side := range []struct {
			n *node
			d *[]time.Duration
		}{{seq, &lkSeq}, {other, &lkOther}} {
			start := time.Now()
			if _, err := side.n.d.Lookup(ctx, fmt.Sprintf("a-%d", i%rounds), 0); err != nil {
				t.Fatalf("lookup through %s: %v", side.n.name, err)
			}
			*side.d = append(*side.d, time.Since(start))
		}
	}
	slices.Sort(lkSeq)
	slices.Sort(lkOther)
	ls, lo := lkSeq[len(lkSeq)/2], lkOther[len(lkOther)/2]
	t.Logf("lookup latency, median of %d: on the sequencer %v, on another node %v (ratio %.2f)",
		len(lkSeq), ls, lo, float64(lo)/float64(ls))
}

// TestHostileSequencerKilled kills the sequencer mid-stream (its
// connections closed, its lease not released) while publishes go through
// the other nodes: another node takes the lease within its time to live
// and a slack, no acknowledged publish is lost, the log keeps growing,
// and both an auditor replaying every epoch (kt/audit) and the client's
// verifier accept the checkpoints from before and after the takeover.
func TestHostileSequencerKilled(t *testing.T) {
	url := pgtest.DB(t)
	k := kttest.NewKeys(t, "kt-nodes-kill")
	a := openNode(t, url, k, "a", true)
	if s := sequencer(t, a); s != a {
		t.Fatal("a does not sequence")
	}
	b := openNode(t, url, k, "b", true)
	c := openNode(t, url, k, "c", true)

	auditor, err := audit.Open(filepath.Join(t.TempDir(), "audit.db"), audit.Options{
		Log: audit.DirectoryLog(b.d), Verifier: k.Verifier, ConfigHash: cfgHash(b.d)})
	if err != nil {
		t.Fatal(err)
	}
	defer auditor.Close()
	client, err := kt.NewVerifierFromConfig(k.VKey, b.d.Config())
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*deadline)
	defer cancel()
	var mu sync.Mutex
	acked := map[string]kt.Published{}
	values := map[string][]byte{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, n := range []*node{b, c} {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				label := fmt.Sprintf("%s-%d", n.name, i)
				value := []byte("binding " + label)
				p, err := n.d.Publish(ctx, label, value)
				if err != nil {
					t.Errorf("publish %s through %s: %v", label, n.name, err)
					return
				}
				mu.Lock()
				acked[label], values[label] = p, value
				mu.Unlock()
			}
		})
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	waitFor(t, "publishes acknowledged before the kill", func() bool { return count() >= 6 })

	// The old checkpoint, accepted by the auditor and the client.
	if _, err := auditor.Follow(ctx); err != nil {
		t.Fatalf("audit before the kill: %v", err)
	}
	p, err := b.d.Lookup(ctx, "b-0", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.VerifyLookup("b-0", p); err != nil {
		t.Fatalf("lookup before the kill: %v", err)
	}
	oldSize := client.KnownSize()

	killed := time.Now()
	a.kill()
	before := count()
	took := waitFor(t, "another node takes the lease", func() bool {
		return b.n.Lease.Token() != 0 || c.n.Lease.Token() != 0
	})
	sizeAtTakeover := max(b.size(), c.size())
	waitFor(t, "the log grows under the new sequencer", func() bool { return b.size() > sizeAtTakeover+2 })
	waitFor(t, "publishes acknowledged after the takeover", func() bool { return count() >= before+6 })
	resumed := time.Since(killed)
	close(stop)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("lease ttl %v: a node took the lease %v after the kill; publishing resumed after %v; %d publishes acknowledged",
		testTTL, took, resumed, count())
	// Within the lease's time to live and a slack: the slack is generous
	// for a loaded machine, but a node that never took over, or waited
	// for something other than the lease, fails.
	if took > testTTL+10*time.Second {
		t.Fatalf("takeover after %v, lease ttl %v", took, testTTL)
	}

	// Every acknowledged publish is served, on both survivors.
	checkLookups(t, k, acked, values, b, c)
	// The auditor replays every epoch up to the new checkpoint; the
	// client's verifier accepts the new one as consistent with the old.
	if _, err := auditor.Follow(ctx); err != nil {
		t.Fatalf("audit after the takeover: %v", err)
	}
	p, err = c.d.Lookup(ctx, "c-0", oldSize)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.VerifyLookup("c-0", p); err != nil {
		t.Fatalf("lookup after the takeover, from the old checkpoint: %v", err)
	}
	if client.KnownSize() <= oldSize {
		t.Fatalf("the client's log did not grow: %d, before %d", client.KnownSize(), oldSize)
	}
}

// TestAttackPausedSequencerFenced plays a sequencer that pauses past its
// lease (a long GC, a stopped VM) while another node takes over and goes
// on: when it wakes up and makes its epoch, the stores refuse it (the
// lease's fence, checked inside their transactions) and the log and the
// tree are as the new sequencer left them.
func TestAttackPausedSequencerFenced(t *testing.T) {
	url := pgtest.DB(t)
	k := kttest.NewKeys(t, "kt-nodes-pause")
	// a is not started: it took the lease when it opened and renews it
	// only when the test says (never: it pauses).
	a := openNode(t, url, k, "a", false)
	if a.n.Lease.Token() == 0 {
		t.Fatal("a did not take the lease")
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if _, err := a.d.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	b := openNode(t, url, k, "b", true)
	waitFor(t, "b takes the lease a stopped renewing", func() bool { return b.n.Lease.Token() != 0 })
	after, err := b.d.Publish(ctx, "after", []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	// A publish queued for the next epoch, which a's epoch would take.
	ch, err := b.d.Enqueue("queued", []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	cp, _ := b.d.Checkpoint()
	epochs := cp.Size

	// a wakes up and makes an epoch.
	_, err = a.d.Tick(ctx)
	if !errors.Is(err, pglease.ErrFenced) {
		t.Fatalf("the paused former sequencer's epoch: %v, want refused by the fence", err)
	}
	queued := <-ch
	if queued.Err != nil || queued.Epoch < epochs {
		t.Fatalf("the queued publish: %+v", queued)
	}
	waitFor(t, "b goes on", func() bool { return b.size() > epochs+2 })
	// a runs its loop again: it finds the lease gone, stops sequencing
	// and follows b, its cache (last filled by its own epochs) brought up
	// to date: its lookups verify.
	a.d.Start()
	checkLookups(t, k, map[string]kt.Published{"after": after, "queued": queued},
		map[string][]byte{"after": []byte("v"), "queued": []byte("v")}, a, b)
	if a.n.Lease.Token() != 0 {
		t.Fatal("a took the lease back from b")
	}
	auditor, err := audit.Open(filepath.Join(t.TempDir(), "audit.db"), audit.Options{
		Log: audit.DirectoryLog(b.d), Verifier: k.Verifier, ConfigHash: cfgHash(b.d)})
	if err != nil {
		t.Fatal(err)
	}
	defer auditor.Close()
	if _, err := auditor.Follow(ctx); err != nil {
		t.Fatalf("audit: %v", err)
	}
}

func cfgHash(d *kt.Directory) [32]byte {
	c := d.Config()
	return c.Hash()
}

// TestNodesPublishFirst: a value committed once (the token epoch length,
// which every node publishes when it starts) published through two nodes
// at once gets one version: one publish lands, the other is refused with
// ErrVersionTaken, never made version 2.
func TestNodesPublishFirst(t *testing.T) {
	url := pgtest.DB(t)
	k := kttest.NewKeys(t, "kt-nodes-first")
	nodes := []*node{openNode(t, url, k, "a", true), openNode(t, url, k, "b", true)}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	for round := range 3 {
		label := fmt.Sprintf("once-%d", round)
		errs := make([]error, len(nodes))
		var wg sync.WaitGroup
		for i, n := range nodes {
			wg.Go(func() { _, errs[i] = n.d.PublishFirst(ctx, label, []byte("the same value")) })
		}
		wg.Wait()
		landed := 0
		for i, err := range errs {
			switch {
			case err == nil:
				landed++
			case !errors.Is(err, kt.ErrVersionTaken):
				t.Fatalf("PublishFirst through %s: %v", nodes[i].name, err)
			}
		}
		if landed != 1 {
			t.Fatalf("round %d: %d of the first publishes landed: %v", round, landed, errs)
		}
		if v, err := nodes[0].d.LatestVersion(label); err != nil || v != 1 {
			t.Fatalf("round %d: the label has version %d (%v), want 1", round, v, err)
		}
	}
}

// TestHostileSequencerDiesWithTakenUpdates: the sequencer takes queued
// publishes into its epoch and dies before it commits them. The next
// holder puts them back in the queue and commits them: the publishers,
// waiting on another node, are answered, and the versions are served.
func TestHostileSequencerDiesWithTakenUpdates(t *testing.T) {
	url := pgtest.DB(t)
	k := kttest.NewKeys(t, "kt-nodes-taken")
	a := openNode(t, url, k, "a", false) // holds the lease; its epochs are the test's
	b := openNode(t, url, k, "b", true)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	const n = 3
	type result struct {
		label string
		p     kt.Published
		err   error
	}
	results := make(chan result, n)
	for i := range n {
		label := fmt.Sprintf("taken-%d", i)
		go func() {
			p, err := b.d.Publish(ctx, label, []byte("v "+label))
			results <- result{label, p, err}
		}()
	}
	// a's epoch takes them all...
	taken := 0
	waitFor(t, "a's epoch takes the publishes", func() bool {
		q, err := a.o.Queue.Take(ctx, a.size(), 10)
		if err != nil {
			t.Fatal(err)
		}
		taken += len(q)
		return taken == n
	})
	// ...and a dies before committing them.
	a.kill()
	want := map[string]kt.Published{}
	values := map[string][]byte{}
	for range n {
		select {
		case r := <-results:
			if r.err != nil {
				t.Fatalf("publish %s: %v", r.label, r.err)
			}
			want[r.label], values[r.label] = r.p, []byte("v "+r.label)
		case <-ctx.Done():
			t.Fatalf("the publishes a took were never answered (%d of %d)", len(want), n)
		}
	}
	checkLookups(t, k, want, values, b)
}
