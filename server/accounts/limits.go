package accounts

import (
	"sync"
	"time"

	"github.com/quicprochat/qpc/internal/ratelimit"
)

// limiter holds the in-memory rate limits. They are deliberately not
// durable: a restart forgets them, which gives an attacker one fresh
// window per restart, and that is cheaper than a disk write per login
// attempt. Nothing in them names an account: failures are keyed by
// credential identifier, which exists for unknown usernames too, so a
// limit applies to an unregistered username exactly as to a registered
// one and its response says nothing about registration (RFC 9807 §10.9).
//
// Per username: RFC 9807 §9.2 counts a login that never completes as a
// failure, so LoginStart records a failure up front and a successful
// LoginFinish forgives the username's failures. MaxFailures recorded
// failures within FailureWindow refuse further LoginStarts.
//
// Global: a token bucket of GlobalRate tokens per second, GlobalBurst
// deep, that every OPAQUE exchange start draws from, bounding the
// server's cost (and the guessing rate over all usernames).
type limiter struct {
	mu          sync.Mutex
	maxFailures int
	window      time.Duration
	failures    map[[credIDSize]byte][]time.Time
	nextSweep   time.Time

	global *ratelimit.Bucket // guarded by mu
}

func newLimiter(o Options) *limiter {
	now := time.Now()
	if o.Now != nil {
		now = o.Now()
	}
	return &limiter{
		maxFailures: o.MaxFailures,
		window:      o.FailureWindow,
		failures:    make(map[[credIDSize]byte][]time.Time),
		global:      ratelimit.NewBucket(o.GlobalRate, o.GlobalBurst, now),
	}
}

// takeGlobal takes one token from the global bucket.
func (l *limiter) takeGlobal(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.takeGlobalLocked(now)
}

func (l *limiter) takeGlobalLocked(now time.Time) bool { return l.global.Allow(now) }

// startLogin admits a login for cred, recording it as a failure until
// succeeded is called. The per-username limit is checked before the global
// bucket, so refused attempts on one username do not drain the bucket for
// everyone else.
func (l *limiter) startLogin(cred [credIDSize]byte, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
	recent := l.recentLocked(cred, now)
	if len(recent) >= l.maxFailures || !l.takeGlobalLocked(now) {
		return false
	}
	l.failures[cred] = append(recent, now)
	return true
}

// succeeded forgives cred's failures after a successful login.
func (l *limiter) succeeded(cred [credIDSize]byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.failures, cred)
}

// recentLocked prunes cred's failures older than the window.
func (l *limiter) recentLocked(cred [credIDSize]byte, now time.Time) []time.Time {
	f := l.failures[cred]
	cut := 0
	for cut < len(f) && !f[cut].After(now.Add(-l.window)) {
		cut++
	}
	if cut == len(f) {
		delete(l.failures, cred)
		return nil
	}
	return f[cut:]
}

// sweepLocked drops every username whose failures all left the window,
// once per window, so that a spray of random usernames costs memory only
// for as long as it can matter (at most GlobalRate × FailureWindow
// entries).
func (l *limiter) sweepLocked(now time.Time) {
	if now.Before(l.nextSweep) {
		return
	}
	l.nextSweep = now.Add(l.window)
	for cred, f := range l.failures {
		if len(f) == 0 || !f[len(f)-1].After(now.Add(-l.window)) {
			delete(l.failures, cred)
		}
	}
}
