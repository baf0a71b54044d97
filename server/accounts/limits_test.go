package accounts

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/quicprochat/qpc/account"
)

func addr(s string) Source { return AddressSource(netip.MustParsePrefix(s)) }

// startOnly sends a LoginStart for username from src and abandons it, as a
// guesser does (KE2 alone tells it whether the guess was right).
func (e *env) startOnly(src Source, username string) error {
	e.t.Helper()
	_, body, err := account.ClientLogin(username, []byte("guess"), []byte(testIdentity), cheapKSF)
	if err != nil {
		e.t.Fatal(err)
	}
	ls, _ := account.UnmarshalLoginStart(body)
	_, _, err = e.svc.LoginStartFrom(bg, src, username, ls.KE1)
	return err
}

// TestAttackUnprovenLoginsLockOut: LoginStarts and wrong proofs from one
// source shut out that source for that username, not the user: alice logs
// in from her own source at once. Her success forgives her source only.
func TestAttackUnprovenLoginsLockOut(t *testing.T) {
	e := newEnv(t, Options{})
	e.mustRegister("alice", "pw", 1)
	mallory, home := addr("192.0.2.7/32"), addr("198.51.100.1/32")
	for i := range 1000 {
		err := e.startOnly(mallory, "alice")
		if i < DefaultMaxFailures && err != nil {
			t.Fatalf("start %d: %v", i, err)
		}
		if i >= DefaultMaxFailures {
			is(t, err, ErrRateLimited)
		}
	}
	// Wrong proofs count the same: mallory's source stays shut out...
	_, err := e.loginFrom(mallory, "alice", "wrong", 9)
	is(t, err, ErrRateLimited)
	// ...and alice, elsewhere, is not.
	e.mustLoginFrom(home, "alice", "pw", 2)
	_, err = e.loginFrom(mallory, "alice", "pw", 3) // success from home forgives home only
	is(t, err, ErrRateLimited)
	// The window passes: mallory may try again.
	e.clock.Advance(DefaultFailureWindow + time.Second)
	if err := e.startOnly(mallory, "alice"); err != nil {
		t.Fatal(err)
	}
}

// TestAttackDistributedGuessing: a guesser with many sources (addresses,
// or connections over Tor) makes alice's username "under attack" after
// UserFailures unproven logins, after which each source gets only
// hotAllowance guesses; alice, from a source of her own, still logs in.
// Unknown usernames are treated alike.
func TestAttackDistributedGuessing(t *testing.T) {
	e := newEnv(t, Options{GlobalRate: 1e9, GlobalBurst: 1 << 30})
	e.mustRegister("alice", "pw", 1)
	for _, user := range []string{"alice", "ghost"} {
		admitted := 0
		for i := range 300 {
			src := ConnectionSource(uint64(i))
			for range DefaultMaxFailures {
				if err := e.startOnly(src, user); err == nil {
					admitted++
				} else {
					is(t, err, ErrRateLimited)
				}
			}
		}
		// 10 sources × 10, then 2 from each of the other 290.
		if want := 10*DefaultMaxFailures + 290*hotAllowance; admitted != want {
			t.Fatalf("%s: %d guesses admitted from 300 sources, want %d", user, admitted, want)
		}
	}
	e.mustLoginFrom(addr("198.51.100.1/32"), "alice", "pw", 2)
	// A typo is allowed too while under attack.
	_, err := e.loginFrom(addr("203.0.113.9/32"), "alice", "typo", 3)
	is(t, err, ErrAuth)
	e.mustLoginFrom(addr("203.0.113.9/32"), "alice", "pw", 3)
}

// TestAttackOneSourceStarvesLogins: one source cannot spend the global
// login budget (its own bucket empties first), and registrations, from
// any number of sources, spend a budget of their own.
func TestAttackOneSourceStarvesLogins(t *testing.T) {
	e := newEnv(t, Options{MaxFailures: 1 << 20, GlobalRate: 10, GlobalBurst: 20, SourceRate: 1, SourceBurst: 5,
		RegisterRate: 1, RegisterBurst: 3, RegisterSourceRate: 1, RegisterSourceBurst: 2})
	e.mustRegister("alice", "pw", 1)
	mallory := addr("2001:db8:1:2::/64")
	for i := range 100 {
		err := e.startOnly(mallory, "user"+string(rune('a'+i%26)))
		if i < 5 && err != nil {
			t.Fatalf("start %d: %v", i, err)
		}
		if i >= 5 {
			is(t, err, ErrRateLimited)
		}
	}
	// Registrations: 2 per source, 3 in all (alice's was one), from as
	// many sources as you like.
	regs := 0
	for i := range 50 {
		if _, err := e.svc.RegisterStartFrom(bg, ConnectionSource(uint64(i)), "spam", []byte("x")); !errors.Is(err, ErrRateLimited) {
			regs++
		}
	}
	if regs != 2 {
		t.Fatalf("%d registrations admitted, want 2", regs)
	}
	e.mustLoginFrom(addr("192.0.2.1/32"), "alice", "pw", 2)
}

// TestSourceOf: address sources are per prefix, connection sources per
// connection, and the two never coincide.
func TestSourceOf(t *testing.T) {
	if addr("192.0.2.7/32") == addr("192.0.2.8/32") {
		t.Fatal("two IPv4 addresses are one source")
	}
	if addr("2001:db8::1/64") != addr("2001:db8::2/64") {
		t.Fatal("one /64 is two sources")
	}
	if ConnectionSource(1) == ConnectionSource(2) || ConnectionSource(0) == (Source{}) || AddressSource(netip.Prefix{}) == (Source{}) {
		t.Fatal("connection sources collide")
	}
}

// TestLimiterSourcesBounded: a spray of sources costs at most maxSources
// buckets per table; sources beyond share the overflow bucket, and idle
// buckets are swept.
func TestLimiterSourcesBounded(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	s := newSourceBuckets(2, 20, now)
	for i := range maxSources + 5000 {
		s.allow(ConnectionSource(uint64(i)), now)
	}
	if len(s.m) != maxSources {
		t.Fatalf("%d buckets", len(s.m))
	}
	// The overflow bucket had its burst of 20 from the 5000 extra sources.
	if s.overflow.Allow(now) {
		t.Fatal("overflow bucket not spent")
	}
	// After the idle period (a full bucket's refill time) they go.
	s.allow(ConnectionSource(1<<40), now.Add(11*time.Second))
	if len(s.m) != 1 {
		t.Fatalf("sweep left %d buckets", len(s.m))
	}
	// The zero Source (in-process callers) has no bucket.
	for range 100 {
		if !s.allow(Source{}, now) {
			t.Fatal("zero source limited")
		}
	}
}

// TestLimiterMemoryBound: a stranger spraying LoginStarts at ten times the
// global rate, each for a new username from a new source, for three
// windows, leaves at most 9/8 × (GlobalBurst + GlobalRate × FailureWindow)
// entries in each map, and the per-source tables at most maxSources each.
// The heap it costs is measured and logged per entry (docs/operations.md
// quotes the figure for the defaults).
func TestLimiterMemoryBound(t *testing.T) {
	o := Options{FailureWindow: time.Minute}
	o.setDefaults()
	now := time.Unix(1_000_000, 0)
	o.Now = func() time.Time { return now }
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	l := newLimiter(o)
	bound := (o.GlobalBurst + int(o.GlobalRate*o.FailureWindow.Seconds())) * 9 / 8
	step := time.Duration(float64(time.Second) / (10 * o.GlobalRate))
	peak := 0
	for i := range int(3 * o.FailureWindow / step) {
		var cred [credIDSize]byte
		binary.BigEndian.PutUint64(cred[:], uint64(i))
		l.startLogin(cred, ConnectionSource(uint64(i)), now)
		peak = max(peak, len(l.failures), len(l.userFails))
		now = now.Add(step)
	}
	if peak > bound {
		t.Fatalf("%d entries at the peak, bound %d", peak, bound)
	}
	if n := len(l.loginSrc.m); n > maxSources {
		t.Fatalf("%d source buckets", n)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	entries := len(l.failures) + len(l.userFails) + len(l.loginSrc.m)
	perEntry := float64(after.HeapAlloc-before.HeapAlloc) / float64(entries)
	// At the defaults: two maps at their bound, two full source tables.
	def := Options{}
	def.setDefaults()
	defEntries := 2*(def.GlobalBurst+int(def.GlobalRate*def.FailureWindow.Seconds()))*9/8 + 2*maxSources
	t.Logf("peak %d entries per map (bound %d); now %d entries in all, %.0f bytes each; at the defaults at most %d entries, about %.0f MiB",
		peak, bound, entries, perEntry, defEntries, perEntry*float64(defEntries)/(1<<20))
	if mib := perEntry * float64(defEntries) / (1 << 20); mib > 64 {
		t.Fatalf("the limiter could take %.0f MiB at the defaults", mib)
	}
	runtime.KeepAlive(l)
}
