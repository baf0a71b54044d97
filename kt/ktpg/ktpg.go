package ktpg

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/quicprochat/qpc/internal/pglease"
	"github.com/quicprochat/qpc/internal/pgtx"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/ktpg/pglog"
	"github.com/quicprochat/qpc/kt/ktpg/pgqueue"
	"github.com/quicprochat/qpc/kt/ktpg/pgseq"
	"github.com/quicprochat/qpc/kt/ktpg/pgtree"
)

// DefaultMaxConns is the node's pool size when the URL sets none: the
// lookups' snapshots, the sequencer's commit and append, the queue's
// listener and its adds and waits.
const DefaultMaxConns = 16

// Options are Configure's; the zero value is usable.
type Options struct {
	// Holder names this node in the lease (unique among the nodes);
	// "": the host name and a random suffix.
	Holder string
	// LeaseTTL is the sequencer lease's time to live; 0: pgseq.DefaultTTL.
	// It must be several epoch intervals (the holder renews once per
	// interval).
	LeaseTTL time.Duration
	Logger   *slog.Logger
	// FallbackPoll is the queue's (pgqueue.Options).
	FallbackPoll time.Duration
}

// Node is one node's connection to the shared directory.
type Node struct {
	Pool  *pgxpool.Pool
	Lease *pgseq.Lease
}

// Close closes the node's pool at once: the directory's Close does it
// too, after its stores; call Close when OpenDirectory failed.
func (n *Node) Close() { n.Pool.Close() }

// Configure connects to the database at url and sets o.Tree, o.OpenLog,
// o.Lease and o.Queue to the shared stores, fenced by the sequencer
// lease.
func Configure(ctx context.Context, url string, o *kt.DirectoryOptions, opt Options) (*Node, error) {
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.Holder == "" {
		host, _ := os.Hostname()
		var r [4]byte
		rand.Read(r[:])
		opt.Holder = host + "-" + hex.EncodeToString(r[:])
	}
	pool, err := pgtx.Open(ctx, url, DefaultMaxConns, "qpc-server kt")
	if err != nil {
		return nil, fmt.Errorf("kt on PostgreSQL: %w", err)
	}
	fail := func(err error) (*Node, error) {
		pool.Close()
		return nil, fmt.Errorf("kt on PostgreSQL: %w", err)
	}
	leases, err := pglease.Open(ctx, pool)
	if err != nil {
		return fail(err)
	}
	lease := pgseq.New(leases, opt.Holder, opt.LeaseTTL)
	tree, err := pgtree.New(ctx, pool, pgtree.Options{Fence: lease.Fence, Logger: opt.Logger})
	if err != nil {
		return fail(err)
	}
	queue, err := pgqueue.New(ctx, pool, pgqueue.Options{Fence: lease.Fence, FallbackPoll: opt.FallbackPoll, Logger: opt.Logger})
	if err != nil {
		tree.Close()
		return fail(err)
	}
	// The directory closes the tree last (after the lease, the queue and
	// the log): the pool goes with it.
	o.Tree, o.Lease, o.Queue = closingTree{tree, pool.Close}, lease, queue
	o.OpenLog = func(ctx context.Context, c kt.LogConfig) (kt.LogDriver, error) {
		return pglog.Open(ctx, pool, c, pglog.Options{Fence: lease.Fence, Logger: opt.Logger})
	}
	return &Node{Pool: pool, Lease: lease}, nil
}

// closingTree is the tree store, closing the node's pool after itself.
type closingTree struct {
	kt.TreeStore
	after func()
}

func (t closingTree) Close() error {
	err := t.TreeStore.Close()
	t.after()
	return err
}
