package pgtree_test

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/quicprochat/qpc/internal/pglease"
	"github.com/quicprochat/qpc/internal/pgtest"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/ktpg/pglog"
	"github.com/quicprochat/qpc/kt/ktpg/pgtree"
)

const seqLease = "kt-sequencer"

// One lease check fences both KT stores.
var (
	_ pgtree.Fence = pglease.Fence(seqLease, nil)
	_ pglog.Fence  = pglease.Fence(seqLease, nil)
)

// node is one qpc-server node's share of the KT state: its lease token
// and its tree store, fenced by that token (as the directory uses it).
type node struct {
	name  string
	token atomic.Uint64
	store *pgtree.Store
}

func newNode(t *testing.T, url, name string) *node {
	n := &node{name: name}
	n.store = open(t, url, pgtree.Options{Logger: quiet, Fence: pglease.Fence(seqLease, n.token.Load)})
	t.Cleanup(func() { n.store.Close() })
	return n
}

// fixed is the fence of the sequencer lease held with token.
func fixed(token uint64) pgtree.Fence {
	return pglease.Fence(seqLease, func() uint64 { return token })
}

func leases(t *testing.T, url string) *pglease.Leases {
	pool, err := pgxpool.New(bg, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	l, err := pglease.Open(bg, pool)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func epochOf(e uint64, by string) kt.EpochCommit {
	return kt.EpochCommit{
		Epoch:      e,
		Versions:   []kt.VersionWrite{{Label: by, Version: uint32(e + 1), Record: []byte(by)}},
		Nodes:      []kt.NodeWrite{{Key: []byte{0, 0}, Value: []byte("root by " + by)}},
		UpdateList: []byte("list by " + by),
		Record:     []byte("record by " + by),
	}
}

// TestAttackTreeFormerSequencer plays a KT sequencer that paused past its
// lease with an epoch built: node A holds the sequencer lease, commits
// epoch 0 and builds epoch 1; then it stalls, its lease expires and node
// B takes it over. When A wakes up, epoch 1 is still the database's next
// one, so the epoch check alone would let A's stale epoch in beside B's
// sequencing: the fence must refuse it and store nothing of it, while B
// commits epoch 1 as the holder.
func TestAttackTreeFormerSequencer(t *testing.T) {
	url := pgtest.DB(t)
	l := leases(t, url)
	a, b := newNode(t, url, "node-a"), newNode(t, url, "node-b")

	// A node without the lease commits nothing.
	if err := a.store.CommitEpoch(bg, epochOf(0, "a")); !errors.Is(err, pglease.ErrFenced) || !errors.Is(err, pgtree.ErrFenced) {
		t.Fatalf("commit without the lease: %v, want ErrFenced", err)
	}
	tok, ok, err := l.Acquire(bg, seqLease, a.name, time.Minute)
	if err != nil || !ok {
		t.Fatalf("node-a Acquire: %d, %v, %v", tok, ok, err)
	}
	a.token.Store(tok)
	if err := a.store.CommitEpoch(bg, epochOf(0, "a")); err != nil {
		t.Fatalf("the holder's commit: %v", err)
	}
	stale := epochOf(1, "a")

	// A's last renewal before its pause (a short ttl stands for a long
	// pause); B takes over once the lease has expired.
	if err := l.Renew(bg, seqLease, a.name, tok, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		tb, ok, err := l.Acquire(bg, seqLease, b.name, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			b.token.Store(tb)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node-b did not take the lease over within 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A wakes up and commits the epoch it built.
	err = a.store.CommitEpoch(bg, stale)
	if !errors.Is(err, pglease.ErrFenced) {
		t.Fatalf("the former sequencer's commit of epoch 1: %v, want ErrFenced", err)
	}
	if err := a.store.CommitEpochFenced(bg, stale, fixed(tok)); !errors.Is(err, pglease.ErrFenced) {
		t.Fatalf("the former sequencer's CommitEpochFenced: %v, want ErrFenced", err)
	}
	// B, the holder, sequences on.
	if err := b.store.CommitEpochFenced(bg, epochOf(1, "b"), fixed(b.token.Load())); err != nil {
		t.Fatalf("the new holder's commit of epoch 1: %v", err)
	}
	snap, err := a.store.Snapshot(bg)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	if n, _ := snap.Epochs(); n != 2 {
		t.Fatalf("Epochs = %d, want 2", n)
	}
	if rec, err := snap.EpochRecord(1); err != nil || string(rec) != "record by b" {
		t.Fatalf("epoch 1's record = %q, %v; want B's", rec, err)
	}
	if root, err := snap.Node([]byte{0, 0}); err != nil || string(root) != "root by b" {
		t.Fatalf("root = %q, %v; want B's", root, err)
	}
	if v, err := snap.LatestVersion("a"); err != nil || v != 1 {
		t.Fatalf("LatestVersion(a) = %d, %v; want 1 (the stale epoch's version 2 not stored)", v, err)
	}
}
