package pgseq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/quicprochat/qpc/internal/pglease"
)

// Name is the lease's name in the leases table.
const Name = "kt-sequencer"

// DefaultTTL is the lease's time to live: a node that stops renewing
// (it died, or paused) is replaced this long after its last renewal. The
// directory renews once per epoch interval (1 s by default).
const DefaultTTL = 10 * time.Second

// Lease is kt.Lease on pglease. It is safe for concurrent use.
type Lease struct {
	leases *pglease.Leases
	holder string
	ttl    time.Duration

	mu    sync.Mutex
	token uint64 // 0: not held
}

// New returns the lease of the node named holder (unique among the
// nodes), held for ttl (0: DefaultTTL) after each Hold.
func New(leases *pglease.Leases, holder string, ttl time.Duration) *Lease {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	return &Lease{leases: leases, holder: holder, ttl: ttl}
}

// Hold renews the lease if this node holds it, or takes it if it is
// free, and reports whether this node holds it now.
func (l *Lease) Hold(ctx context.Context) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.token != 0 {
		err := l.leases.Renew(ctx, Name, l.holder, l.token, l.ttl)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, pglease.ErrLost) {
			// Unknown: the renewal may not have reached the database.
			// The fence decides; this node keeps trying as holder.
			return true, err
		}
		l.token = 0
	}
	t, ok, err := l.leases.Acquire(ctx, Name, l.holder, l.ttl)
	if err != nil || !ok {
		return false, err
	}
	l.token = t
	return true, nil
}

// Release gives the lease up if this node holds it.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.token == 0 {
		return nil
	}
	t := l.token
	l.token = 0
	if err := l.leases.Release(ctx, Name, l.holder, t); err != nil && !errors.Is(err, pglease.ErrLost) {
		return err
	}
	return nil
}

// Token is the lease's token while this node holds it, 0 otherwise.
func (l *Lease) Token() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.token
}

// Fence checks, inside tx, that this node still holds the lease with the
// token it was granted (pglease.Check): the stores' write transactions
// run it first.
func (l *Lease) Fence(ctx context.Context, tx pgx.Tx) error {
	t := l.Token()
	if t == 0 {
		return fmt.Errorf("%s: not held by %s: %w", Name, l.holder, pglease.ErrFenced)
	}
	return pglease.Check(ctx, tx, Name, t)
}
