package hostile_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quicprochat/qpc/account"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/wire"
)

// rawFrom is h.Raw from a source address of its own (a loopback address
// such as 127.0.0.2): a stranger elsewhere on the network, whom the
// server can tell from the users on 127.0.0.1 only by its address.
func rawFrom(t *testing.T, h *hostile.Server, tag, ip string) *hostile.RawConn {
	t.Helper()
	a, err := wire.ParseAddress(h.Addr(tag))
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: pc}
	t.Cleanup(func() { tr.Close(); pc.Close() })
	raddr, err := net.ResolveUDPAddr("udp", a.Host)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	qc, err := tr.Dial(ctx, raddr, &tls.Config{
		InsecureSkipVerify: true, NextProtos: wire.ALPNs(wire.SupportedVersions()), MinVersion: tls.VersionTLS13,
	}, &quic.Config{MaxIdleTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	r := &hostile.RawConn{QUIC: qc, Policy: padding.Control}
	m, err := r.RoundTrip(&wire.ClientHello{Versions: wire.SupportedVersions()})
	if err != nil {
		t.Fatal(err)
	}
	hello, ok := m.(*wire.ServerHello)
	if !ok {
		t.Fatalf("raw hello: got %T", m)
	}
	r.Policy = hello.Policy
	return r
}

// loginStart is the first record of a login of username with a password
// guess: all an attacker needs to send, since KE2 alone tells it whether
// the guess was right.
func loginStart(t *testing.T, username string) *wire.AccountRequest {
	t.Helper()
	_, body, err := account.ClientLogin(username, []byte("guess"), []byte("any server"),
		account.WithKSF(account.KSFParams{Time: 1, MemoryKiB: 64, Threads: 1}))
	if err != nil {
		t.Fatal(err)
	}
	return &wire.AccountRequest{Op: wire.AccountLoginStart, Body: body}
}

// registerStart is the first record of a registration of username.
func registerStart(t *testing.T, username string) *wire.AccountRequest {
	t.Helper()
	_, body, err := account.ClientRegister(username, []byte("pw"), []byte("any server"),
		account.WithKSF(account.KSFParams{Time: 1, MemoryKiB: 64, Threads: 1}))
	if err != nil {
		t.Fatal(err)
	}
	return &wire.AccountRequest{Op: wire.AccountRegisterStart, Body: body}
}

// tally counts a flood's answers: admitted (the exchange's reply),
// refused as RATE_LIMITED, and anything else.
type tally struct{ admitted, limited, other atomic.Int64 }

func (c *tally) add(m wire.Message, err error) {
	switch m := m.(type) {
	case *wire.AccountReply:
		c.admitted.Add(1)
	case *wire.ErrorMessage:
		if m.Code == wire.CodeRateLimited {
			c.limited.Add(1)
			return
		}
		c.other.Add(1)
	default:
		if err == nil || !errors.Is(err, context.Canceled) {
			c.other.Add(1)
		}
	}
}

func (c *tally) String() string {
	return fmt.Sprintf("%d admitted, %d rate limited, %d other", c.admitted.Load(), c.limited.Load(), c.other.Load())
}

// flood sends next() from each connection, workers streams at a time per
// connection, as fast as the server answers, until the returned stop is
// called (at the latest when the test ends).
func flood(t *testing.T, conns []*hostile.RawConn, workers int, next func() wire.Message, c *tally) (stop func()) {
	var wg sync.WaitGroup
	done := make(chan struct{})
	var once sync.Once
	stop = func() { once.Do(func() { close(done) }); wg.Wait() }
	t.Cleanup(stop)
	for _, rc := range conns {
		for range workers {
			wg.Go(func() {
				for {
					select {
					case <-done:
						return
					default:
					}
					c.add(rc.RoundTrip(next()))
				}
			})
		}
	}
	return stop
}

// TestAttackLoginFlood: a stranger on other addresses sends LoginStarts
// for alice as fast as the server answers them, on many connections,
// while alice logs in three times. Each of her logins succeeds within a
// few seconds: the stranger's unproven logins count against its own
// sources, not against alice, and its sources cannot spend the global
// budget alone.
func TestAttackLoginFlood(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	alice := h.NewUser(t, "alice", "alice")
	start := time.Now()
	if err := alice.Login(ctxT(t), []byte("password of alice")); err != nil {
		t.Fatal(err)
	}
	quiet := time.Since(start)
	var conns []*hostile.RawConn
	for i := range 16 { // four addresses, four connections each
		conns = append(conns, rawFrom(t, h, "mallory", fmt.Sprintf("127.0.0.%d", 2+i/4)))
	}
	ls := loginStart(t, "alice")
	var c tally
	stop := flood(t, conns, 4, func() wire.Message { return ls }, &c)
	time.Sleep(500 * time.Millisecond) // the flood is under way
	var times []time.Duration
	for range 3 {
		start := time.Now()
		err := alice.Login(ctxT(t), []byte("password of alice"))
		d := time.Since(start)
		if err != nil {
			stop()
			t.Fatalf("alice's login during the flood (%s): %v", &c, err)
		}
		times = append(times, d)
		// A few seconds, or ten times her login without the flood
		// when a loaded machine makes that slow too.
		if d > max(5*time.Second, 10*quiet) {
			t.Errorf("alice's login took %v during the flood (%v without it)", d, quiet)
		}
	}
	stop()
	t.Logf("alice's login without a flood: %v; during the flood: %v; the flood: %s", quiet, times, &c)
	if c.limited.Load() == 0 {
		t.Fatalf("the flood was never limited: %s", &c)
	}
	// Each of the stranger's four addresses had its 10 unproven logins of
	// alice and no more (2 each once alice is under attack).
	if n := c.admitted.Load(); n > 4*10 {
		t.Fatalf("the stranger had %d LoginStarts of alice answered, want at most 40", n)
	}
}

// TestAttackLoginLockout: a thousand LoginStarts for alice that prove
// nothing, from one stranger's address, do not lock her out; the
// stranger's own address is what they shut out (ten guesses, then
// RATE_LIMITED), and only for alice.
func TestAttackLoginLockout(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	alice := h.NewUser(t, "alice", "alice")
	h.NewUser(t, "bob", "bob")
	mallory := rawFrom(t, h, "mallory", "127.0.0.2")
	ls := loginStart(t, "alice")
	var c tally
	for range 1000 {
		c.add(mallory.RoundTrip(ls))
	}
	t.Logf("1000 LoginStarts of alice: %s", &c)
	if c.admitted.Load() != 10 || c.limited.Load() != 990 {
		t.Fatalf("1000 LoginStarts of alice from one address: %s, want 10 admitted", &c)
	}
	start := time.Now()
	if err := alice.Login(ctxT(t), []byte("password of alice")); err != nil {
		t.Fatalf("alice locked out by LoginStarts that proved nothing: %v", err)
	}
	t.Logf("alice logged in after the attack in %v", time.Since(start))
	// The stranger's address may still try other usernames.
	if m, err := mallory.RoundTrip(loginStart(t, "bob")); err != nil {
		t.Fatal(err)
	} else if _, ok := m.(*wire.AccountReply); !ok {
		t.Fatalf("a LoginStart of bob from the stranger's address: %v", m)
	}
}

// TestAttackRegistrationFlood: one stranger's address sends RegisterStarts
// as fast as the server answers them while bob logs in and carol
// registers. Registrations from one source are few (the source's bucket)
// and come out of their own global budget, so bob's login and carol's
// registration go through.
func TestAttackRegistrationFlood(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	bob := h.NewUser(t, "bob", "bob")
	var conns []*hostile.RawConn
	for range 4 {
		conns = append(conns, rawFrom(t, h, "mallory", "127.0.0.2"))
	}
	spam := make([]wire.Message, 64)
	for i := range spam {
		spam[i] = registerStart(t, fmt.Sprintf("spam%03d", i))
	}
	var n atomic.Int64
	var c tally
	stop := flood(t, conns, 4, func() wire.Message { return spam[n.Add(1)%int64(len(spam))] }, &c)
	time.Sleep(time.Second) // long enough to drain a shared budget
	start := time.Now()
	err := bob.Login(ctxT(t), []byte("password of bob"))
	d := time.Since(start)
	if err != nil {
		t.Fatalf("bob's login during a registration flood: %v (flood: %s)", err, &c)
	}
	h.NewUser(t, "carol", "carol") // fails the test if carol cannot register
	stop()
	t.Logf("bob's login during the flood took %v; the flood: %s", d, &c)
	if c.limited.Load() == 0 {
		t.Fatalf("the flood was never limited: %s", &c)
	}
	// One address: its burst of 5 and one more per 10 s.
	if a := c.admitted.Load(); a > 6 {
		t.Fatalf("one address had %d RegisterStarts answered, want at most 6", a)
	}
}
