package accounts

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"time"

	"github.com/quicprochat/qpc/internal/ratelimit"
)

// Source names where an OPAQUE exchange comes from, for the limits kept
// per source: the server derives it from the connection (AddressSource for
// a clearnet client, ConnectionSource where the address says nothing, as
// over the onion service, whose clients all share the tunnel's address).
// It is comparable and holds no more than the server's connection limits
// already hold, and only in memory.
//
// The zero Source is the in-process caller (tests, tools): it is one
// source for the per-username limit but has no per-source bucket.
type Source struct{ k [18]byte }

// AddressSource is the source of a clearnet client: its address prefix
// (the server counts an IPv4 address or an IPv6 /64 as one client).
func AddressSource(p netip.Prefix) Source {
	var s Source
	s.k[0] = 1
	a := p.Masked().Addr().As16()
	copy(s.k[1:17], a[:])
	s.k[17] = byte(p.Bits())
	return s
}

// ConnectionSource is the source of a client known only by its connection.
func ConnectionSource(id uint64) Source {
	var s Source
	s.k[0] = 2
	binary.BigEndian.PutUint64(s.k[1:9], id)
	return s
}

// hotAllowance is how many unproven logins each source may have in the
// window for a username that is under attack (see limiter).
const hotAllowance = 2

// maxSources bounds each per-source bucket table; sources beyond it share
// one overflow bucket until the table's idle entries are swept.
const maxSources = 1 << 16

// limiter holds the in-memory rate limits of OPAQUE exchanges. They are
// deliberately not durable: a restart forgets them, which gives an
// attacker one fresh window per restart, and that is cheaper than a disk
// write per login attempt.
//
// Nothing in them depends on whether an account exists: usernames are
// keyed by credential identifier, which exists for unknown usernames too,
// so every limit applies to an unregistered username exactly as to a
// registered one and its answer says nothing about registration (RFC 9807
// §10.9).
//
// Per username and source: a login is unproven from its LoginStart until
// its LoginFinish proves the password (KE3 verifies, RFC 9807 §6.4.4).
// One that is never finished counts as much as one whose KE3 fails: KE2
// alone tells the client whether its password guess was right (the
// envelope does not open otherwise, §4.1.3), so a guesser never needs to
// send KE3. MaxFailures unproven logins of one username from one source
// within FailureWindow refuse further LoginStarts of that username from
// that source. A proven login forgives its own source's count. Requests
// that prove nothing thus shut out their own source, never the user's.
//
// Per username, across sources: once UserFailures unproven logins of a
// username (from any sources) lie in the window, the username is under
// attack and each source's allowance for it drops to hotAllowance: a
// guesser then needs a fresh source for every two guesses, while the user,
// from a source of her own, still gets two tries.
//
// Per source: a token bucket per source for logins (SourceRate,
// SourceBurst) and one for registrations (RegisterSourceRate,
// RegisterSourceBurst), so that one source cannot spend the global
// budgets.
//
// Global: a token bucket for logins and password changes (GlobalRate,
// GlobalBurst) and a separate one for registrations (RegisterRate,
// RegisterBurst), bounding the server's OPAQUE work; registrations cannot
// starve logins.
type limiter struct {
	mu           sync.Mutex
	maxFailures  int
	userFailures int
	window       time.Duration
	failures     map[userSource][]time.Time       // unproven logins per username and source
	userFails    map[[credIDSize]byte][]time.Time // per username, the latest UserFailures of them
	nextSweep    time.Time
	login        *ratelimit.Bucket // global, logins and password changes
	register     *ratelimit.Bucket // global, registrations
	loginSrc     *sourceBuckets
	registerSrc  *sourceBuckets
}

type userSource struct {
	cred [credIDSize]byte
	src  Source
}

func newLimiter(o Options) *limiter {
	now := time.Now()
	if o.Now != nil {
		now = o.Now()
	}
	return &limiter{
		maxFailures:  o.MaxFailures,
		userFailures: o.UserFailures,
		window:       o.FailureWindow,
		failures:     make(map[userSource][]time.Time),
		userFails:    make(map[[credIDSize]byte][]time.Time),
		login:        ratelimit.NewBucket(o.GlobalRate, o.GlobalBurst, now),
		register:     ratelimit.NewBucket(o.RegisterRate, o.RegisterBurst, now),
		loginSrc:     newSourceBuckets(o.SourceRate, o.SourceBurst, now),
		registerSrc:  newSourceBuckets(o.RegisterSourceRate, o.RegisterSourceBurst, now),
	}
}

// takeRegister admits a registration from src.
func (l *limiter) takeRegister(src Source, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.registerSrc.allow(src, now) && l.register.Allow(now)
}

// takeLogin admits an OPAQUE exchange of an authenticated account (a
// password change) from the global login budget.
func (l *limiter) takeLogin(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.login.Allow(now)
}

// startLogin admits a login for cred from src and records it as unproven
// until succeeded is called. The per-username limit is checked first, then
// the source's bucket, then the global one, so refused attempts spend
// nothing of the budgets the others share.
func (l *limiter) startLogin(cred [credIDSize]byte, src Source, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
	key := userSource{cred, src}
	cutoff := now.Add(-l.window)
	recent := recentIn(l.failures, key, cutoff)
	allowed := l.maxFailures
	if len(recentIn(l.userFails, cred, cutoff)) >= l.userFailures {
		allowed = min(allowed, hotAllowance)
	}
	if len(recent) >= allowed || !l.loginSrc.allow(src, now) || !l.login.Allow(now) {
		return false
	}
	l.failures[key] = append(recent, now)
	u := append(l.userFails[cred], now)
	if len(u) > l.userFailures {
		u = u[len(u)-l.userFailures:]
	}
	l.userFails[cred] = u
	return true
}

// succeeded forgives the unproven logins of cred from src after the login
// that started at started proved the password. The username's count
// across sources loses only that login: the others' stay.
func (l *limiter) succeeded(cred [credIDSize]byte, src Source, started time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.failures, userSource{cred, src})
	u := l.userFails[cred]
	for i, t := range u {
		if t.Equal(started) {
			u = append(u[:i:i], u[i+1:]...)
			break
		}
	}
	if len(u) == 0 {
		delete(l.userFails, cred)
	} else {
		l.userFails[cred] = u
	}
}

// recentIn prunes m[k]'s times up to cutoff and returns the rest.
func recentIn[K comparable](m map[K][]time.Time, k K, cutoff time.Time) []time.Time {
	f := m[k]
	cut := 0
	for cut < len(f) && !f[cut].After(cutoff) {
		cut++
	}
	if cut == len(f) {
		delete(m, k)
		return nil
	}
	if cut > 0 {
		f = f[cut:]
		m[k] = f
	}
	return f
}

// sweepLocked drops every entry whose times all left the window, eight
// times per window, so that a spray of random usernames costs memory only
// for as long as it can matter: each admitted login adds one time to each
// map, so each holds at most 9/8 × (GlobalBurst + GlobalRate ×
// FailureWindow) entries and times.
func (l *limiter) sweepLocked(now time.Time) {
	if now.Before(l.nextSweep) {
		return
	}
	l.nextSweep = now.Add(l.window / 8)
	cutoff := now.Add(-l.window)
	for k, f := range l.failures {
		if len(f) == 0 || !f[len(f)-1].After(cutoff) {
			delete(l.failures, k)
		}
	}
	for k, f := range l.userFails {
		if len(f) == 0 || !f[len(f)-1].After(cutoff) {
			delete(l.userFails, k)
		}
	}
}

// sourceBuckets is a token bucket per source. A bucket left alone for
// burst/rate seconds is full, the same as a new one, so it is dropped; at
// most maxSources are kept, and sources beyond share one overflow bucket.
type sourceBuckets struct {
	rate      float64
	burst     int
	idle      time.Duration
	m         map[Source]*sourceBucket
	overflow  *ratelimit.Bucket
	nextSweep time.Time
	lastSweep time.Time
}

type sourceBucket struct {
	b    ratelimit.Bucket
	last time.Time
}

func newSourceBuckets(rate float64, burst int, now time.Time) *sourceBuckets {
	idle := time.Duration(float64(burst) / rate * float64(time.Second))
	return &sourceBuckets{
		rate: rate, burst: burst, idle: max(idle, time.Second),
		m:        make(map[Source]*sourceBucket),
		overflow: ratelimit.NewBucket(rate, burst, now),
	}
}

func (s *sourceBuckets) allow(src Source, now time.Time) bool {
	if src == (Source{}) {
		return true
	}
	s.sweep(now)
	e, ok := s.m[src]
	if !ok {
		if len(s.m) >= maxSources {
			return s.overflow.Allow(now)
		}
		e = &sourceBucket{b: *ratelimit.NewBucket(s.rate, s.burst, now)}
		s.m[src] = e
	}
	e.last = now
	return e.b.Allow(now)
}

// sweep drops the buckets that have refilled, at most once per idle
// period, or once per second while the table is full, so that its cost
// per request stays constant on average.
func (s *sourceBuckets) sweep(now time.Time) {
	next := now.Add(s.idle)
	if len(s.m) >= maxSources {
		if now.Before(s.lastSweep.Add(time.Second)) {
			return
		}
	} else if now.Before(s.nextSweep) {
		return
	}
	s.lastSweep, s.nextSweep = now, next
	for k, e := range s.m {
		if now.Sub(e.last) >= s.idle {
			delete(s.m, k)
		}
	}
}
