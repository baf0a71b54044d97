package pglease_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/quicprochat/qpc/internal/pglease"
	"github.com/quicprochat/qpc/internal/pgtest"
	"github.com/quicprochat/qpc/internal/pgtx"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

var bg = context.Background()

// open returns the leases of a fresh database, and its pool.
func open(t *testing.T) (*pglease.Leases, *pgxpool.Pool) {
	t.Helper()
	pool, err := pgxpool.New(bg, pgtest.DB(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	l, err := pglease.Open(bg, pool)
	if err != nil {
		t.Fatal(err)
	}
	return l, pool
}

func acquire(t *testing.T, l *pglease.Leases, name, holder string, ttl time.Duration) (uint64, bool) {
	t.Helper()
	tok, ok, err := l.Acquire(bg, name, holder, ttl)
	if err != nil {
		t.Fatalf("Acquire(%s, %s): %v", name, holder, err)
	}
	return tok, ok
}

// await polls Acquire until holder gets the lease, failing after a
// generous deadline; it returns the token and when it got it.
func await(t *testing.T, l *pglease.Leases, name, holder string, ttl time.Duration) (uint64, time.Time) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if tok, ok := acquire(t, l, name, holder, ttl); ok {
			return tok, time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s did not get the lease %s within 30 s", holder, name)
	return 0, time.Time{}
}

// fencedWrite is a holder's write: one row into writes, in the same
// transaction as the lease check, through pgtx.Write as the stores write.
func fencedWrite(pool *pgxpool.Pool, name string, token uint64, what string) error {
	return pgtx.Write(bg, pool, func(ctx context.Context, tx pgx.Tx) error {
		if err := pglease.Fence(name, func() uint64 { return token })(ctx, tx); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO writes (what) VALUES ($1)`, what)
		return err
	}, nil, func(_ context.Context, err error) error { return err })
}

func writes(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(bg, `SELECT what FROM writes ORDER BY n`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestAttackLeaseFormerHolder plays a sequencer that paused (a GC pause,
// a stopped VM) past its lease: meanwhile the lease expired and another
// node took it over. When the former holder wakes up it writes as if it
// still held the lease, with its old token: the write must be refused
// and nothing of it stored, while the new holder's writes go through.
func TestAttackLeaseFormerHolder(t *testing.T) {
	l, pool := open(t)
	if _, err := pool.Exec(bg, `CREATE TABLE writes (n serial PRIMARY KEY, what text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	old, ok := acquire(t, l, "seq", "node-a", time.Minute)
	if !ok {
		t.Fatal("node-a did not get a free lease")
	}
	if err := fencedWrite(pool, "seq", old, "a while holding"); err != nil {
		t.Fatalf("the holder's write: %v", err)
	}
	// node-a renews one last time, then pauses (a short ttl stands for
	// a long pause); node-b takes over once the lease expired.
	if err := l.Renew(bg, "seq", "node-a", old, 50*time.Millisecond); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	tok, _ := await(t, l, "seq", "node-b", time.Minute)
	if tok <= old {
		t.Fatalf("takeover token %d is not above the former %d", tok, old)
	}
	// node-a wakes up and writes with its old token.
	err := fencedWrite(pool, "seq", old, "a after the takeover")
	if !errors.Is(err, pglease.ErrFenced) {
		t.Fatalf("the former holder's write: %v, want ErrFenced", err)
	}
	if err := l.Renew(bg, "seq", "node-a", old, time.Minute); !errors.Is(err, pglease.ErrLost) {
		t.Fatalf("the former holder's Renew: %v, want ErrLost", err)
	}
	if err := l.Release(bg, "seq", "node-a", old); !errors.Is(err, pglease.ErrLost) {
		t.Fatalf("the former holder's Release: %v, want ErrLost", err)
	}
	if err := fencedWrite(pool, "seq", tok, "b"); err != nil {
		t.Fatalf("the new holder's write: %v", err)
	}
	if got := fmt.Sprint(writes(t, pool)); got != "[a while holding b]" {
		t.Fatalf("stored writes %s, want [a while holding b]", got)
	}
	if h, ht, err := l.Holder(bg, "seq"); err != nil || h != "node-b" || ht != tok {
		t.Fatalf("Holder = %q, %d, %v; want node-b, %d", h, ht, err, tok)
	}
}

// TestLeaseFenceWaitsForWriteInFlight: a takeover that comes while the
// holder's checked write is in flight waits for it: the write commits
// before the new token exists, so no write of an old token lands after a
// new holder started.
func TestLeaseFenceWaitsForWriteInFlight(t *testing.T) {
	l, pool := open(t)
	if _, err := pool.Exec(bg, `CREATE TABLE writes (n serial PRIMARY KEY, what text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	// node-a checks its lease in a write that stays open past the
	// lease's expiry. The check must come within the ttl: on a loaded
	// machine a longer ttl is tried.
	var old uint64
	var tx pgx.Tx
	var ttl time.Duration
	for ttl = 500 * time.Millisecond; ; ttl *= 4 {
		if ttl > 30*time.Second {
			t.Fatal("node-a could not check its lease within 32 s of taking it")
		}
		old, _ = acquire(t, l, "seq", "node-a", ttl) // free: never held, or expired
		var err error
		if tx, err = pool.Begin(bg); err != nil {
			t.Fatal(err)
		}
		err = pglease.Check(bg, tx, "seq", old)
		if err == nil {
			break
		}
		tx.Rollback(bg)
		if !errors.Is(err, pglease.ErrFenced) {
			t.Fatal(err)
		}
	}
	defer tx.Rollback(bg)
	if _, err := tx.Exec(bg, `INSERT INTO writes (what) VALUES ('a')`); err != nil {
		t.Fatal(err)
	}
	taken := make(chan uint64, 1)
	go func() {
		for {
			tok, ok, err := l.Acquire(bg, "seq", "node-b", time.Minute)
			if err != nil {
				t.Error(err)
				close(taken)
				return
			}
			if ok {
				taken <- tok
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	// The lease expires while the write is open; node-b's takeover
	// must wait for the row lock. Wait well past the ttl (a lower
	// bound: the takeover must not happen however long we wait).
	time.Sleep(ttl + time.Second)
	select {
	case tok := <-taken:
		t.Fatalf("node-b took the lease over (token %d) while node-a's checked write was in flight", tok)
	default:
	}
	if err := tx.Commit(bg); err != nil {
		t.Fatal(err)
	}
	select {
	case tok := <-taken:
		if tok != old+1 {
			t.Fatalf("takeover token %d, want %d", tok, old+1)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("node-b did not take the lease over within 30 s of the write's commit")
	}
	if got := fmt.Sprint(writes(t, pool)); got != "[a]" {
		t.Fatalf("writes %s, want [a]", got)
	}
}

// TestLeaseTakeover: a holder renews and keeps the lease; then it dies
// (stops renewing) and another node gets the lease once ttl has passed,
// not before, and within ttl plus a generous slack.
func TestLeaseTakeover(t *testing.T) {
	l, _ := open(t)
	// Long beside the renewal interval, so that a loaded machine does
	// not make node-a miss a renewal.
	const ttl = 5 * time.Second
	tok, ok := acquire(t, l, "seq", "node-a", ttl)
	if !ok {
		t.Fatal("node-a did not get a free lease")
	}
	var lastRenew time.Time
	for range 3 {
		lastRenew = time.Now()
		if err := l.Renew(bg, "seq", "node-a", tok, ttl); err != nil {
			t.Fatalf("Renew: %v", err)
		}
		if _, ok := acquire(t, l, "seq", "node-b", ttl); ok {
			t.Fatal("node-b took a lease that is being renewed")
		}
		time.Sleep(ttl / 20)
	}
	// node-a dies.
	got, at := await(t, l, "seq", "node-b", ttl)
	if got != tok+1 {
		t.Fatalf("takeover token %d, want %d", got, tok+1)
	}
	// lastRenew is before the database stamped the expiry; at is after
	// the database saw it pass.
	if d := at.Sub(lastRenew); d < ttl {
		t.Fatalf("node-b took the lease %v after node-a's last renewal, before the ttl %v", d, ttl)
	}
	if h, ht, err := l.Holder(bg, "seq"); err != nil || h != "node-b" || ht != got {
		t.Fatalf("Holder = %q, %d, %v; want node-b, %d", h, ht, err, got)
	}
}

// TestLeaseConcurrentAcquire: of N nodes acquiring one free lease at once
// exactly one gets it, also when they take over an expired one.
func TestLeaseConcurrentAcquire(t *testing.T) {
	l, _ := open(t)
	const n = 16
	var prev uint64
	for round := range 3 {
		switch round {
		case 1: // the winner released the lease
			h, tok, err := l.Holder(bg, "seq")
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Release(bg, "seq", h, tok); err != nil {
				t.Fatal(err)
			}
		case 2: // the lease expired
			h, tok, err := l.Holder(bg, "seq")
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Renew(bg, "seq", h, tok, time.Microsecond); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		toks := make(chan uint64, n)
		for i := range n {
			wg.Go(func() {
				<-start
				tok, ok, err := l.Acquire(bg, "seq", fmt.Sprintf("node-%d", i), time.Minute)
				if err != nil {
					t.Error(err)
				}
				if ok {
					toks <- tok
				}
			})
		}
		close(start)
		wg.Wait()
		close(toks)
		var won []uint64
		for tok := range toks {
			won = append(won, tok)
		}
		if len(won) != 1 {
			t.Fatalf("round %d: %d of %d concurrent Acquires got the lease (tokens %v), want exactly 1", round, len(won), n, won)
		}
		if won[0] <= prev {
			t.Fatalf("round %d: token %d not above the previous %d", round, won[0], prev)
		}
		prev = won[0]
	}
}

// TestLeaseTokensGrow: every grant has a greater token than the one
// before, after a release or an expiry, for one holder or another; Renew
// and Release act only for the holder with its token.
func TestLeaseTokensGrow(t *testing.T) {
	l, pool := open(t)
	a, ok := acquire(t, l, "seq", "node-a", time.Minute)
	if !ok || a == 0 {
		t.Fatalf("first grant: %d, %v", a, ok)
	}
	if _, ok := acquire(t, l, "seq", "node-a", time.Minute); ok {
		t.Fatal("Acquire of a lease the caller holds granted it again")
	}
	if _, ok := acquire(t, l, "other", "node-b", time.Minute); !ok {
		t.Fatal("a second lease name is not independent of the first")
	}
	if err := l.Renew(bg, "seq", "node-b", a, time.Minute); !errors.Is(err, pglease.ErrLost) {
		t.Fatalf("Renew by another holder: %v, want ErrLost", err)
	}
	if err := l.Release(bg, "seq", "node-a", a+1); !errors.Is(err, pglease.ErrLost) {
		t.Fatalf("Release with another token: %v, want ErrLost", err)
	}
	if err := l.Release(bg, "seq", "node-a", a); err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(bg)
	if err != nil {
		t.Fatal(err)
	}
	if err := pglease.Check(bg, tx, "seq", a); !errors.Is(err, pglease.ErrFenced) {
		t.Fatalf("Check of a released lease: %v, want ErrFenced", err)
	}
	tx.Rollback(bg)
	b, ok := acquire(t, l, "seq", "node-a", 100*time.Millisecond)
	if !ok || b != a+1 {
		t.Fatalf("grant after a release: %d, %v; want %d", b, ok, a+1)
	}
	c, _ := await(t, l, "seq", "node-b", time.Minute)
	if c != b+1 {
		t.Fatalf("grant after an expiry: %d, want %d", c, b+1)
	}
	tx, err = pool.Begin(bg)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(bg)
	if err := pglease.Check(bg, tx, "never", 1); !errors.Is(err, pglease.ErrFenced) {
		t.Fatalf("Check of a lease never taken: %v, want ErrFenced", err)
	}
	if _, _, err := l.Acquire(bg, "seq", "x", 0); err == nil {
		t.Fatal("Acquire with a zero ttl was accepted")
	}
}
