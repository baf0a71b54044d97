package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/quicprochat/qpc/account"
	"github.com/quicprochat/qpc/internal/ratelimit"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/server/config"
	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/wire"
)

// Defaults of KTLimits: config.DefaultKTPublishRate and the others
// (docs/operations.md "Limits").
const (
	// maxKTPublishers bounds the accounts whose publish budgets are
	// tracked at once (about 100 bytes each); accounts beyond share one
	// budget until the table has room again.
	maxKTPublishers = 65_536
)

// KTLimits bound what key-transparency requests may cost the server
// (docs/key-transparency.md §7). Zero values take the defaults.
type KTLimits struct {
	KTPublishRate     float64 // publishes per hour per account
	KTPublishBurst    int     // publishes an account may make at once
	KTProofRate       float64 // VRF proofs per second one connection's lookups may cost
	KTProofBurst      int     // and at once
	KTProofRateTotal  float64 // VRF proofs per second all lookups together may cost
	KTProofBurstTotal int     // and at once
}

func (l *KTLimits) setDefaults() {
	orDefault(&l.KTPublishRate, config.DefaultKTPublishRate)
	orDefault(&l.KTPublishBurst, config.DefaultKTPublishBurst)
	orDefault(&l.KTProofRate, config.DefaultKTProofRate)
	orDefault(&l.KTProofBurst, config.DefaultKTProofBurst)
	orDefault(&l.KTProofRateTotal, config.DefaultKTProofRateTotal)
	orDefault(&l.KTProofBurstTotal, config.DefaultKTProofBurstTotal)
}

// ktLimiter holds the server's key-transparency budgets: per account for
// publishes, in total for lookup proofs.
type ktLimiter struct {
	publish *keyedBuckets
	mu      sync.Mutex
	proofs  *ratelimit.Bucket // KTProofRateTotal
}

func newKTLimiter(l KTLimits, now time.Time) *ktLimiter {
	return &ktLimiter{
		publish: newKeyedBuckets(l.KTPublishRate/3600, l.KTPublishBurst, maxKTPublishers, now),
		proofs:  ratelimit.NewBucket(l.KTProofRateTotal, l.KTProofBurstTotal, now),
	}
}

// ktConnBudget is one connection's budget of lookup proofs, made at its
// first lookup.
type ktConnBudget struct {
	mu     sync.Mutex
	proofs *ratelimit.Bucket
}

// proofBudget is the kt.ProofBudget of a lookup on connection cs: the
// connection's budget first, then the server's.
func (s *Server) proofBudget(cs *connState) kt.ProofBudget {
	return func(n int) error {
		now := s.opts.Now()
		b := &cs.kt
		b.mu.Lock()
		if b.proofs == nil {
			b.proofs = ratelimit.NewBucket(s.opts.KTProofRate, s.opts.KTProofBurst, now)
		}
		ok := b.proofs.AllowN(now, n)
		b.mu.Unlock()
		if !ok {
			s.opts.Metrics.Refused(metrics.LimitKTProofs)
			return wire.Errorf(wire.CodeRateLimited, "key-transparency lookups of new labels on this connection are over their limit, retry later")
		}
		l := s.ktLimits
		l.mu.Lock()
		ok = l.proofs.AllowN(now, n)
		l.mu.Unlock()
		if !ok {
			b.mu.Lock()
			b.proofs.Return(n)
			b.mu.Unlock()
			s.opts.Metrics.Refused(metrics.LimitKTProofs)
			return wire.Errorf(wire.CodeUnavailable, "the server is computing as many key-transparency proofs as it may, retry later")
		}
		return nil
	}
}

// keyedBuckets is a token bucket per key (an account's username, hashed).
// A bucket left alone for burst/rate is full, the same as a new one, so
// it is dropped; at most max are kept, and keys beyond share one overflow
// bucket.
type keyedBuckets struct {
	mu        sync.Mutex
	rate      float64 // per second
	burst     int
	max       int
	idle      time.Duration
	m         map[[32]byte]*keyedBucket
	overflow  *ratelimit.Bucket
	nextSweep time.Time
}

type keyedBucket struct {
	b    *ratelimit.Bucket
	last time.Time
}

func newKeyedBuckets(rate float64, burst, max int, now time.Time) *keyedBuckets {
	return &keyedBuckets{
		rate: rate, burst: burst, max: max,
		idle:     time.Duration(float64(burst) / rate * float64(time.Second)),
		m:        make(map[[32]byte]*keyedBucket),
		overflow: ratelimit.NewBucket(rate, burst, now),
	}
}

// take takes a token of key's bucket; give returns it, for work refused
// for reasons not the key's own.
func (k *keyedBuckets) take(key string, now time.Time) (ok bool, give func()) {
	h := sha256.Sum256([]byte(key))
	k.mu.Lock()
	defer k.mu.Unlock()
	k.sweep(now)
	b := k.overflow
	if e, found := k.m[h]; found {
		e.last, b = now, e.b
	} else if len(k.m) < k.max {
		e := &keyedBucket{b: ratelimit.NewBucket(k.rate, k.burst, now), last: now}
		k.m[h], b = e, e.b
	}
	if !b.Allow(now) {
		return false, nil
	}
	return true, func() {
		k.mu.Lock()
		defer k.mu.Unlock()
		b.Return(1)
	}
}

// sweep drops the buckets that have refilled, at most once per second,
// so that its cost per request stays constant on average.
func (k *keyedBuckets) sweep(now time.Time) {
	if now.Before(k.nextSweep) {
		return
	}
	k.nextSweep = now.Add(max(time.Second, min(k.idle, time.Minute)))
	for h, e := range k.m {
		if now.Sub(e.last) >= k.idle {
			delete(k.m, h)
		}
	}
}

// len is the number of tracked keys.
func (k *keyedBuckets) len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m)
}

// ktRequest answers the key-transparency records (docs/protocol.md
// §4.11); handled is false for any other record.
func (s *Server) ktRequest(ctx context.Context, cs *connState, m wire.Message) (resp wire.Message, handled bool, err error) {
	switch m.(type) {
	case *wire.KTPublish, *wire.KTLookup, *wire.KTLookupBatch, *wire.KTHistory, *wire.KTConsistency, *wire.KTCheckpoint, *wire.KTTile:
	default:
		return nil, false, nil
	}
	d := s.opts.KT
	if d == nil {
		return nil, true, wire.Errorf(wire.CodeUnavailable, "this server keeps no key-transparency log")
	}
	switch m := m.(type) {
	case *wire.KTPublish:
		resp, err = s.ktPublish(ctx, d, m)
	case *wire.KTLookup:
		var p *kt.LookupProof
		if p, err = d.LookupCharged(ctx, m.Label, m.KnownSize, s.proofBudget(cs)); err == nil {
			resp = &wire.KTProof{Proof: p.Marshal()}
		}
	case *wire.KTLookupBatch:
		// One epoch proof for all the labels; each label's VRF proofs
		// are charged as its own lookup's would be.
		var p *kt.BatchLookupProof
		if p, err = d.LookupBatch(ctx, m.Labels, m.KnownSize, s.proofBudget(cs)); err == nil {
			resp = &wire.KTProof{Proof: p.Marshal()}
		}
	case *wire.KTHistory:
		if err = s.ktOwner(ctx, m.Session, m.Label); err != nil {
			return nil, true, err
		}
		var p *kt.HistoryProof
		if p, err = d.HistoryCharged(ctx, m.Label, m.Since, m.KnownSize, s.proofBudget(cs)); err == nil {
			resp = &wire.KTProof{Proof: p.Marshal()}
		}
	case *wire.KTConsistency:
		var p *kt.ConsistencyProof
		if p, err = d.Consistency(ctx, m.Old); err == nil {
			resp = &wire.KTProof{Proof: p.Marshal()}
		}
	case *wire.KTTile:
		var data []byte
		if data, err = d.LogResource(m.Path); err == nil {
			resp = &wire.KTTileData{Data: data}
		} else {
			err = wire.Errorf(wire.CodeNotFound, "no such log resource")
		}
	case *wire.KTCheckpoint:
		var p *kt.ConsistencyProof
		if p, err = d.Consistency(ctx, 0); err == nil {
			resp = &wire.KTProof{Proof: p.Marshal()}
		}
	}
	return resp, true, ktError(err)
}

// ktOwner checks that the session belongs to the account registered as label.
func (s *Server) ktOwner(ctx context.Context, session [wire.SessionSize]byte, label string) error {
	if s.opts.Accounts == nil {
		return wire.Errorf(wire.CodeUnavailable, "this server has no accounts")
	}
	acct, err := s.opts.Accounts.AuthenticateUsername(ctx, account.Token(session), label)
	if err != nil {
		return accountError(err)
	}
	s.noteAccount(ctx, acct)
	return nil
}

// ktPublish publishes a binding under the session's own username. The
// binding must name the label and carry a valid signature by its identity
// key: the server publishes nothing a client could not have signed. Each
// account has its budget of publishes (KTPublishRate, KTPublishBurst),
// spent only once its session and binding check out, so that nobody else
// can spend it; a publish the directory refused for its own reasons (queue
// full, withdrawn after the request timed out) gives its token back.
func (s *Server) ktPublish(ctx context.Context, d *kt.Directory, m *wire.KTPublish) (wire.Message, error) {
	if err := s.ktOwner(ctx, m.Session, m.Label); err != nil {
		return nil, err
	}
	b, err := kt.ParseBinding(m.Value)
	if err != nil || b.Verify(m.Label) != nil {
		return nil, wire.Errorf(wire.CodeProtocol, "binding does not verify for this label")
	}
	ok, give := s.ktLimits.publish.take(m.Label, s.opts.Now())
	if !ok {
		s.opts.Metrics.Refused(metrics.LimitKTPublish)
		return nil, wire.Errorf(wire.CodeRateLimited, "this account may publish to key transparency %d times at once and %g times an hour; retry later",
			s.opts.KTPublishBurst, s.opts.KTPublishRate)
	}
	p, err := d.Publish(ctx, m.Label, m.Value)
	if err != nil {
		if errors.Is(err, kt.ErrQueueFull) || errors.Is(err, kt.ErrWithdrawn) {
			give()
		}
		if errors.Is(err, kt.ErrQueueFull) {
			s.opts.Metrics.Refused(metrics.LimitKTQueue)
		}
		return nil, ktError(err)
	}
	return &wire.KTPublished{Version: p.Version, Epoch: p.Epoch}, nil
}

func ktError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, kt.ErrLabel), errors.Is(err, kt.ErrValue):
		return wire.Errorf(wire.CodeProtocol, "invalid label or value")
	case errors.Is(err, kt.ErrTooManyVersions):
		return wire.Errorf(wire.CodeQuota, "this handle has reached the server's limit of key-transparency versions; it cannot publish again")
	case errors.Is(err, kt.ErrQueueFull):
		return wire.Errorf(wire.CodeUnavailable, "the key-transparency publish queue is full, retry later")
	case errors.Is(err, kt.ErrWithdrawn):
		return errors.Join(wire.Errorf(wire.CodeUnavailable, "the publish timed out before an epoch took it and was not published; retry"), err)
	case errors.Is(err, kt.ErrClosed), errors.Is(err, kt.ErrNoEpoch),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return errors.Join(wire.Errorf(wire.CodeUnavailable, "key transparency unavailable, retry later"), err)
	}
	if _, ok := wire.CodeOf(err); ok {
		return err
	}
	return err
}

// KTHandler serves the key-transparency log read-only over HTTP as C2SP
// tlog-tiles under prefix (GET <prefix>/checkpoint, <prefix>/tile/...),
// and each served epoch's update list for auditors
// (<prefix>/updates/<epoch>). Mount it on its own public listener, never
// on the admin one.
func KTHandler(d *kt.Directory, prefix string) http.Handler {
	return d.Handler(prefix)
}
