package pgseq_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/quicprochat/qpc/internal/pglease"
	"github.com/quicprochat/qpc/internal/pgtest"
	"github.com/quicprochat/qpc/internal/pgtx"
	"github.com/quicprochat/qpc/kt/ktpg/pgseq"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestLeaseHoldReleaseFence: of two nodes one holds; Hold renews it; a
// release hands it to the other at once; the former holder's fence then
// refuses inside a transaction, and its Hold reports it lost.
func TestLeaseHoldReleaseFence(t *testing.T) {
	url := pgtest.DB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgtx.Open(ctx, url, 4, "pgseq test")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	leases, err := pglease.Open(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	a, b := pgseq.New(leases, "a", time.Minute), pgseq.New(leases, "b", time.Minute)
	fenced := func(l *pgseq.Lease) error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return l.Fence(ctx, tx) })
	}
	if held, err := a.Hold(ctx); err != nil || !held {
		t.Fatalf("a: %v %v", held, err)
	}
	tok := a.Token()
	if held, err := b.Hold(ctx); err != nil || held {
		t.Fatalf("b while a holds: %v %v", held, err)
	}
	if held, err := a.Hold(ctx); err != nil || !held || a.Token() != tok {
		t.Fatalf("a renews: %v %v, token %d then %d", held, err, tok, a.Token())
	}
	if err := fenced(a); err != nil {
		t.Fatalf("the holder's fence: %v", err)
	}
	if err := fenced(b); !errors.Is(err, pglease.ErrFenced) {
		t.Fatalf("a non-holder's fence: %v", err)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if held, err := b.Hold(ctx); err != nil || !held || b.Token() <= tok {
		t.Fatalf("b after the release: %v %v, token %d (a's was %d)", held, err, b.Token(), tok)
	}
	if err := fenced(a); !errors.Is(err, pglease.ErrFenced) {
		t.Fatalf("the former holder's fence: %v", err)
	}
	if held, err := a.Hold(ctx); err != nil || held || a.Token() != 0 {
		t.Fatalf("a after b took over: %v %v, token %d", held, err, a.Token())
	}
}
