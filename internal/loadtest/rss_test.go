package loadtest

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quicprochat/qpc/account"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/internal/loadtest/loadkit"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/wire"
)

const mib = 1 << 20

// Bounds and sizes of TestAttackServerRSS (docs/operations.md "Memory
// under attack").
const (
	// rssBound is what each attack may make the server's VmRSS grow by
	// over its RSS before the first attack: issue 18's figure. The
	// defaults bound the Fetch/Subscribe attack's envelope bytes at
	// delivery_bytes (128 MiB) however many addresses attack; the rest
	// is per stream (a goroutine, a 4 KiB read buffer, QUIC state) and
	// the Go collector's headroom over the live heap (GOGC=100).
	rssBound = 256 * mib
	// rssAbort stops an attack that has made the server grow by this
	// much: the test has failed by then, and the machine is shared.
	rssAbort = 1024 * mib
	// attackConns is how many connections each attacking address opens:
	// just under the default max_conns_per_addr (64), which the test
	// keeps, so the figure is what one address can do.
	attackConns = 60
	// attackStreams per connection: the default max_streams.
	attackStreams = 100
	// subStreams of each attack connection's streams are Subscribes (the
	// rest Fetches); 32 is the default cap per connection.
	subStreams = 10
	// strangerBoxes mailboxes of strangerMsgs envelopes of the largest
	// size each: more than a connection's delivery budget (2 MiB) per
	// mailbox, so every stream has a page to hold.
	strangerBoxes = 4
	strangerMsgs  = 16
	// ktSources are the loopback addresses the KT-publish attacker
	// registers accounts from, ktAccountsPerSource each (the per-source
	// registration burst is 5): about as many accounts as it registered
	// in ktWindow when it registered during the attack.
	ktSources           = 20
	ktAccountsPerSource = 2
	// rounds of the honest pair's send and receive per sample: the p99
	// of 300 is their third slowest, which one hiccup of a shared
	// machine does not decide.
	rounds = 300
	// ktWindow is how long the KT-publish attack lasts: the honest
	// rounds are spread over it.
	ktWindow = 6 * time.Second
	// ktSettle is how long the KT-publish attack runs before the honest
	// rounds start: its opening burst is in by then.
	ktSettle = 500 * time.Millisecond
	// honestTokens: the mailbox, 20 warm-up rounds, two unloaded
	// samples and one loaded of rounds each, and some slack (941 in
	// all); within the default token_quota (1,000 a day).
	honestTokens = 1 + 20 + 3*rounds + 20
)

// p99Slack: an honest p99 more than twice the unloaded one still passes
// if it is within this of it. At p99s of a few milliseconds one
// scheduling hiccup of the machine doubles the figure (CI, load 1: 3.2 ms
// unloaded, 7.5 ms under the record-header attack, which cost 41× the
// unloaded p99 before its bound); a jammed server costs hundreds. With
// other packages' tests on the same two cores (load 4-5) the code before
// and after every change of 2026-12-07 gave 23 ms against 9 ms unloaded
// under the KT publish flood in one run of three, and 6-8 ms in the
// others: the slack covers that, and a jammed server still fails.
const p99Slack = 25 * time.Millisecond

// rssFlags are extra qpc-server flags from QPC_RSS_SERVER_FLAGS (space
// separated), to check that the test fails when a bound is removed, for
// example --delivery-bytes=1099511627776 --delivery-conn-bytes=1099511627776.

func rssFlags() []string { return strings.Fields(os.Getenv("QPC_RSS_SERVER_FLAGS")) }

// rssAddrs is how many loopback addresses the Fetch/Subscribe attack
// comes from (QPC_RSS_ADDRS, default 3: more than one source's share of
// the delivery budget and of the stream caps).
func rssAddrs(t *testing.T) int {
	v := os.Getenv("QPC_RSS_ADDRS")
	if v == "" {
		return 3
	}
	var n int
	if _, err := fmt.Sscan(v, &n); err != nil || n < 1 || n > 50 {
		t.Fatalf("QPC_RSS_ADDRS=%q: want 1..50", v)
	}
	return n
}

// memStatus is VmRSS, RssAnon and RssFile of /proc/<pid>/status, bytes.
func (p *serverProc) memStatus(t *testing.T) (rss, anon, file int64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.Lines(string(b)) {
		var v int64
		f := strings.Fields(l)
		if len(f) != 3 || f[2] != "kB" {
			continue
		}
		if _, err := fmt.Sscan(f[1], &v); err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		switch f[0] {
		case "VmRSS:":
			rss = v << 10
		case "RssAnon:":
			anon = v << 10
		case "RssFile:":
			file = v << 10
		}
	}
	if rss == 0 {
		t.Fatal("no VmRSS in /proc/<pid>/status")
	}
	return rss, anon, file
}

// loopback returns a UDP socket on ip (any of 127/8 on Linux), so that the
// server counts what is dialled over it as coming from that address.
func loopback(t *testing.T, ip string) net.PacketConn {
	t.Helper()
	pc, err := net.ListenPacket("udp", ip+":0")
	if err != nil {
		t.Fatalf("udp socket on %s: %v", ip, err)
	}
	return pc
}

// dialFrom dials the server with the client SDK from ip.
func dialFrom(ctx context.Context, t *testing.T, addr, ip string) *protocol.Conn {
	t.Helper()
	a, err := wire.ParseAddress(addr)
	if err != nil {
		t.Fatal(err)
	}
	raddr, err := net.ResolveUDPAddr("udp", a.Host)
	if err != nil {
		t.Fatal(err)
	}
	pc := loopback(t, ip)
	opts := clientOptions
	opts.PacketConn, opts.RemoteAddr = pc, raddr
	c, err := protocol.Dial(ctx, addr, opts)
	if err != nil {
		pc.Close()
		t.Fatalf("dial from %s: %v", ip, err)
	}
	t.Cleanup(func() { c.Close(); pc.Close() })
	return c
}

// rawConn speaks records to the server directly, as an attacker's own
// code would: no SDK, no retries, streams it never reads.
type rawConn struct {
	q      *quic.Conn
	tr     *quic.Transport
	pc     net.PacketConn
	policy padding.Policy
}

// dialRaw dials the server from ip and runs the version hello.
func dialRaw(ctx context.Context, addr, ip string) (*rawConn, error) {
	a, err := wire.ParseAddress(addr)
	if err != nil {
		return nil, err
	}
	raddr, err := net.ResolveUDPAddr("udp", a.Host)
	if err != nil {
		return nil, err
	}
	pc, err := net.ListenPacket("udp", ip+":0")
	if err != nil {
		return nil, err
	}
	r := &rawConn{pc: pc, tr: &quic.Transport{Conn: pc}, policy: padding.Control}
	r.q, err = r.tr.Dial(ctx, raddr, &tls.Config{
		// The attacker need not check whom it talks to.
		InsecureSkipVerify: true, NextProtos: wire.ALPNs(wire.SupportedVersions()), MinVersion: tls.VersionTLS13,
	}, &quic.Config{MaxIdleTimeout: 2 * time.Minute, KeepAlivePeriod: 10 * time.Second})
	if err != nil {
		r.close()
		return nil, err
	}
	m, err := r.roundTrip(ctx, &wire.ClientHello{Versions: wire.SupportedVersions()})
	if err != nil {
		r.close()
		return nil, fmt.Errorf("hello: %w", err)
	}
	hello, ok := m.(*wire.ServerHello)
	if !ok {
		r.close()
		return nil, fmt.Errorf("hello: got %v", m)
	}
	r.policy = hello.Policy
	return r, nil
}

func (r *rawConn) close() {
	if r.q != nil {
		r.q.CloseWithError(0, "")
	}
	r.tr.Close()
	r.pc.Close()
}

// roundTrip sends m on a stream of its own and reads the first record of
// the answer.
func (r *rawConn) roundTrip(ctx context.Context, m wire.Message) (wire.Message, error) {
	st, err := r.q.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	st.SetDeadline(time.Now().Add(30 * time.Second))
	if err := wire.WriteMessage(st, r.policy, m); err != nil {
		return nil, err
	}
	st.Close()
	return wire.NewReader(st, r.policy).ReadMessage()
}

// signed returns m signed with the mailbox key for this connection (the
// owner signature covers the TLS exporter, docs/protocol.md §5) as one
// padded record.
func (r *rawConn) signed(m wire.Message, key ed25519.PrivateKey) ([]byte, error) {
	tlsState := r.q.ConnectionState().TLS
	b, err := tlsState.ExportKeyingMaterial(wire.ExporterLabel, nil, wire.BindingSize)
	if err != nil {
		return nil, err
	}
	if err := wire.Sign(m, key, b); err != nil {
		return nil, err
	}
	return wire.AppendMessage(nil, r.policy, m)
}

// openUnread opens a stream, writes rec on it and leaves it: the answer is
// never read, the stream never closed.
func (r *rawConn) openUnread(ctx context.Context, rec []byte) error {
	st, err := r.q.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	_, err = st.Write(rec)
	return err
}

// honestPair is the well-behaved client: alice sends to bob's mailbox,
// bob receives on a subscription, over the client SDK.
type honestPair struct {
	alice, bob *protocol.Conn
	mb         *protocol.Mailbox
	sub        *protocol.Subscription
	toks       [][]byte
}

// round sends one message and returns the time until bob has it; bob
// acknowledges it after the clock stops.
func (p *honestPair) round(ctx context.Context, t *testing.T) time.Duration {
	t.Helper()
	if len(p.toks) == 0 {
		t.Fatal("the honest pair ran out of tokens")
	}
	tok := p.toks[0]
	p.toks = p.toks[1:]
	id := protocol.NewMessageID()
	env := make([]byte, 1000)
	copy(env, id[:])
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if _, err := p.alice.Send(sctx, p.mb.SendID, id, env, tok); err != nil {
		t.Fatalf("honest send: %v", err)
	}
	for {
		select {
		case m, ok := <-p.sub.C:
			if !ok {
				t.Fatal("honest subscription ended")
			}
			if m.ID != id {
				continue // a late duplicate of an earlier round
			}
			d := time.Since(start)
			if _, err := p.bob.Ack(sctx, p.mb, []wire.MessageID{id}); err != nil {
				t.Fatalf("honest ack: %v", err)
			}
			return d
		case <-sctx.Done():
			t.Fatalf("honest message not delivered in 90 s")
		}
	}
}

// sample runs n rounds, starting one every gap at most.
func (p *honestPair) sample(ctx context.Context, t *testing.T, n int, gap time.Duration) []time.Duration {
	t.Helper()
	d := make([]time.Duration, n)
	for i := range d {
		start := time.Now()
		d[i] = p.round(ctx, t)
		time.Sleep(gap - time.Since(start))
	}
	return d
}

func p50(d []time.Duration) time.Duration {
	return slices.Sorted(slices.Values(d))[len(d)/2]
}

// streamsOpen reads qpc_streams_open from /metrics.
func (p *serverProc) streamsOpen(t *testing.T) int {
	t.Helper()
	sum := 0.0
	for k, v := range p.metrics(t) {
		if strings.HasPrefix(k, "qpc_streams_open") {
			sum += v
		}
	}
	return int(sum)
}

// p99 of a sample (nearest rank).
func p99(d []time.Duration) time.Duration {
	s := slices.Sorted(slices.Values(d))
	return s[(len(s)*99+99)/100-1]
}

// rssWatch samples the server's RSS every 20 ms until stopped, keeping
// the peak, and sets abort once it has grown rssAbort over base.
type rssWatch struct {
	mu                       sync.Mutex
	peak, anonPeak, filePeak int64
	abort                    atomic.Bool
	base                     atomic.Int64
	stop                     chan struct{}
	done                     chan struct{}
}

func watchRSS(t *testing.T, srv *serverProc, base int64) *rssWatch {
	w := &rssWatch{stop: make(chan struct{}), done: make(chan struct{})}
	w.base.Store(base)
	sample := func() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", srv.Pid()))
		if err != nil {
			return // exited: alive() says so
		}
		var rss, anon, file int64
		for l := range strings.Lines(string(b)) {
			f := strings.Fields(l)
			if len(f) != 3 {
				continue
			}
			var v int64
			fmt.Sscan(f[1], &v)
			switch f[0] {
			case "VmRSS:":
				rss = v << 10
			case "RssAnon:":
				anon = v << 10
			case "RssFile:":
				file = v << 10
			}
		}
		w.mu.Lock()
		if rss > w.peak {
			w.peak, w.anonPeak, w.filePeak = rss, anon, file
		}
		w.mu.Unlock()
		if rss-w.base.Load() > rssAbort {
			w.abort.Store(true)
		}
	}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			sample()
			select {
			case <-w.stop:
				sample()
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

// rebase takes a new baseline and forgets the peak so far.
func (w *rssWatch) rebase(base int64) {
	w.base.Store(base)
	w.mu.Lock()
	w.peak, w.anonPeak, w.filePeak = 0, 0, 0
	w.mu.Unlock()
}

func (w *rssWatch) end() (peak, anon, file int64) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peak, w.anonPeak, w.filePeak
}

// attack is one attack's connections, closed when it ends.
type attack struct {
	mu      sync.Mutex
	conns   []*rawConn
	errs    atomic.Int64
	streams atomic.Int64
	firstEr atomic.Value
}

func (a *attack) add(r *rawConn) {
	a.mu.Lock()
	a.conns = append(a.conns, r)
	a.mu.Unlock()
}

func (a *attack) fail(err error) {
	a.errs.Add(1)
	a.firstEr.CompareAndSwap(nil, err)
}

func (a *attack) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range a.conns {
		r.close()
	}
	a.conns = nil
}

// streamFlood opens attackConns connections from each of ips, and on
// each attackStreams streams whose first bytes rec(conn, stream) gives,
// never reading an answer: a connection at a time, stopping early if
// the watch says so.
func (a *attack) streamFlood(ctx context.Context, addr string, ips []string, w *rssWatch, rec func(r *rawConn, i int) ([]byte, error)) {
	var wg sync.WaitGroup
	for _, ip := range ips {
		wg.Go(func() {
			for range attackConns {
				if w.abort.Load() || ctx.Err() != nil {
					return
				}
				dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				r, err := dialRaw(dctx, addr, ip)
				cancel()
				if err != nil {
					a.fail(fmt.Errorf("dial from %s: %w", ip, err))
					continue
				}
				a.add(r)
				for i := range attackStreams {
					b, err := rec(r, i)
					if err == nil {
						octx, cancel := context.WithTimeout(ctx, 10*time.Second)
						err = r.openUnread(octx, b)
						cancel()
					}
					if err != nil {
						a.fail(err)
						break
					}
					a.streams.Add(1)
				}
			}
		})
	}
	wg.Wait()
}

// strangerMailboxes creates n mailboxes from ip, each holding msgs
// envelopes of the largest size the server takes, paid with tokens of an
// account of the stranger's own (one per mailbox and one per send: the
// same as over the wire with the SDK).
func strangerMailboxes(ctx context.Context, t *testing.T, addr, ip string, n, msgs int) []*protocol.Mailbox {
	t.Helper()
	c := dialFrom(ctx, t, addr, ip)
	toks := mintTokensOn(ctx, t, c, "stranger", n*(msgs+1))
	env := make([]byte, c.Limits().MaxEnvelope)
	var mbs []*protocol.Mailbox
	for range n {
		mb, err := c.CreateMailbox(ctx, toks[0])
		if err != nil {
			t.Fatalf("stranger's mailbox: %v", err)
		}
		toks = toks[1:]
		for range msgs {
			rand.Read(env[:64])
			if _, err := c.Send(ctx, mb.SendID, protocol.NewMessageID(), env, toks[0]); err != nil {
				t.Fatalf("stranger's send: %v", err)
			}
			toks = toks[1:]
		}
		mbs = append(mbs, mb)
	}
	c.Close()
	return mbs
}

// bigBinding is a binding for label that verifies, close to the largest
// value the directory takes (kt.MaxValueLen).
func bigBinding(label string) (*kt.Binding, error) {
	_, idKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	b := &kt.Binding{
		Label:        label,
		IdentityKeys: []ed25519.PublicKey{idKey.Public().(ed25519.PublicKey)},
		IntroKey:     make([]byte, 1216),
	}
	for range 7 {
		k := make([]byte, 2000)
		rand.Read(k)
		b.DeviceKeys = append(b.DeviceKeys, k)
	}
	if err := b.Sign(idKey); err != nil {
		return nil, err
	}
	v := b.Marshal()
	if len(v) > kt.MaxValueLen {
		return nil, fmt.Errorf("binding of %d bytes, more than kt.MaxValueLen", len(v))
	}
	return kt.ParseBinding(v)
}

// ktAccount is an account of the KT-publish attacker, on a connection of
// its own from its source address.
type ktAccount struct {
	c      *protocol.Conn
	sess   *protocol.Session
	handle string
	value  *kt.Binding
}

// ktAccounts registers perSource accounts from each of ktSources loopback
// addresses, as fast as the registration limits let.
func ktAccounts(ctx context.Context, addr string, a *attack, perSource int) []*ktAccount {
	var mu sync.Mutex
	var accts []*ktAccount
	var wg sync.WaitGroup
	for s := range ktSources {
		ip := fmt.Sprintf("127.0.1.%d", 10+s)
		wg.Go(func() {
			for n := 0; n < perSource && ctx.Err() == nil; n++ {
				handle := fmt.Sprintf("kt%d-%d", s, n)
				for ctx.Err() == nil {
					pc, err := net.ListenPacket("udp", ip+":0")
					if err != nil {
						a.fail(err)
						return
					}
					a.add(&rawConn{tr: &quic.Transport{Conn: pc}, pc: pc})
					wa, _ := wire.ParseAddress(addr)
					raddr, _ := net.ResolveUDPAddr("udp", wa.Host)
					opts := clientOptions
					opts.PacketConn, opts.RemoteAddr, opts.MaxAttempts = pc, raddr, 1
					c, err := protocol.Dial(ctx, addr, opts)
					if err != nil {
						a.fail(err)
						continue
					}
					var dev account.DeviceID
					rand.Read(dev[:])
					sess, err := c.Register(ctx, handle, []byte("password"), dev, handle, cheapKSF)
					if err == nil {
						value, err := bigBinding(handle)
						if err != nil {
							a.fail(err)
							return
						}
						mu.Lock()
						accts = append(accts, &ktAccount{c: c, sess: sess, handle: handle, value: value})
						mu.Unlock()
						break
					}
					c.Close()
					if _, coded := wire.CodeOf(err); !coded {
						a.fail(err)
					}
					select { // refused: the registration budget is spent
					case <-ctx.Done():
					case <-time.After(200 * time.Millisecond):
					}
				}
			}
		})
	}
	wg.Wait()
	return accts
}

// ktHelper is the KT-publish attacker's process: this test binary run
// again with QPC_RSS_HELPER=kt (TestMain).
type ktHelper struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
}

// startKTHelper starts the attacker's process and waits until it has
// registered its accounts.
func startKTHelper(e *attackEnv) *ktHelper {
	t := e.t
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "QPC_RSS_HELPER=kt", "QPC_RSS_HELPER_ADDR="+e.srv.addr)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &ktHelper{cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}
	t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	if !h.out.Scan() || !strings.HasPrefix(h.out.Text(), "ready ") {
		t.Fatalf("the KT attacker's process did not get ready: %q %v", h.out.Text(), h.out.Err())
	}
	return h
}

// flood starts the publishing, stops it when ctx ends and describes it.
func (h *ktHelper) flood(ctx context.Context, e *attackEnv) string {
	io.WriteString(h.stdin, "go\n")
	<-ctx.Done()
	h.stdin.Close()
	var last string
	for h.out.Scan() {
		if last = h.out.Text(); strings.HasPrefix(last, "accounts=") {
			break
		}
	}
	var accts, streams, errs int64
	var published, refused int64
	if _, err := fmt.Sscanf(last, "accounts=%d published=%d refused=%d errors=%d", &accts, &published, &refused, &errs); err != nil {
		e.t.Errorf("the KT attacker's report %q: %v", last, err)
	}
	streams = accts
	e.a.streams.Add(streams)
	if errs > 0 {
		e.a.errs.Add(errs)
		e.a.firstEr.CompareAndSwap(nil, fmt.Errorf("%d errors in the KT attacker's process", errs))
	}
	return fmt.Sprintf("sources=%d accounts=%d published=%d refused=%d", ktSources, accts, published, refused)
}

// ktHelperMain is the KT-publish attacker's process: it registers its
// accounts, says "ready", publishes from "go" on its standard input until
// that closes, and reports what it did.
func ktHelperMain() int {
	addr := os.Getenv("QPC_RSS_HELPER_ADDR")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := &attack{}
	defer a.close()
	accts := ktAccounts(ctx, addr, a, ktAccountsPerSource)
	fmt.Printf("ready %d\n", len(accts))
	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() || in.Text() != "go" {
		return 1
	}
	go func() {
		for in.Scan() {
		}
		cancel()
	}()
	var published, refused atomic.Int64
	ktFlood(ctx, accts, a, &published, &refused)
	if err, _ := a.firstEr.Load().(error); err != nil {
		fmt.Fprintf(os.Stderr, "KT attacker: %d errors, the first: %v\n", a.errs.Load(), err)
	}
	fmt.Printf("accounts=%d published=%d refused=%d errors=%d\n", len(accts), published.Load(), refused.Load(), a.errs.Load())
	var wg sync.WaitGroup
	for _, acct := range accts {
		wg.Go(func() { acct.c.Close() })
	}
	wg.Wait()
	return 0
}

func TestMain(m *testing.M) {
	if os.Getenv("QPC_RSS_HELPER") == "kt" {
		os.Exit(ktHelperMain())
	}
	os.Exit(m.Run())
}

// ktFlood has each account publish its burst of large bindings at once
// and then once a second until ctx ends, counting the answers.
func ktFlood(ctx context.Context, accts []*ktAccount, a *attack, published, refused *atomic.Int64) {
	var wg sync.WaitGroup
	for _, acct := range accts {
		publish := func() {
			_, _, err := acct.c.KTPublish(ctx, acct.sess, protocol.NewKTOwner(acct.handle), acct.value)
			var verr *protocol.KTVersionError
			switch _, coded := wire.CodeOf(err); {
			case err == nil, errors.As(err, &verr):
				published.Add(1)
			case coded:
				refused.Add(1)
			case ctx.Err() == nil:
				a.fail(err)
			}
		}
		wg.Go(func() {
			var pw sync.WaitGroup
			for range 10 { // the burst (8) and then some
				pw.Go(publish)
			}
			pw.Wait()
			a.streams.Add(1) // one more account publishing
			for ctx.Err() == nil {
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
					publish()
				}
			}
		})
	}
	wg.Wait()
}

// TestAttackServerRSS: the qpc-server binary, run as its own process with
// its default memory budgets, is attacked, one attack per fresh server
// (so that memory one attack left behind does not hide or inflate the
// next one's), by
//
//   - fetch-subscribe: a stranger fills mailboxes of its own with the
//     largest envelopes and opens attackConns connections of
//     attackStreams Fetch and Subscribe streams each, never reading;
//   - record-header: attackConns connections of attackStreams streams
//     that each send a record header announcing the largest bucket and
//     then nothing;
//   - kt-publish: accounts registered from ktSources addresses as fast
//     as the registration limits let, each publishing ~15 KiB bindings
//     as fast as the publish limits let, for ktWindow;
//   - record-body: as record-header, but each stream sends all of the
//     record except its last byte;
//
// while a well-behaved pair on the client SDK keeps sending and
// receiving. Under each attack the server's VmRSS (/proc/<pid>/status)
// grows by at most rssBound over its RSS before the attack, and the
// pair's send-to-delivery p99 stays within 2× of its unloaded p99 on the
// same server (the unloaded sample is taken before the attack and after
// it, so that the machine's other work falls on both sides).
//
// QPC_RSS_PHASES (comma-separated names) runs some of the attacks only;
// QPC_RSS_ADDRS makes the Fetch/Subscribe attack come from that many
// addresses; QPC_RSS_SERVER_FLAGS adds server flags (to remove a bound).
func TestAttackServerRSS(t *testing.T) {
	only := strings.Fields(strings.ReplaceAll(os.Getenv("QPC_RSS_PHASES"), ",", " "))
	addrs := rssAddrs(t)
	ipsFrom := func(first int, n int) []string {
		var ips []string
		for i := range n {
			ips = append(ips, fmt.Sprintf("127.0.0.%d", first+i))
		}
		return ips
	}
	header := func(body bool) attackFunc {
		return func(ctx context.Context, e *attackEnv) string {
			e.a.streamFlood(ctx, e.srv.addr, ipsFrom(3, 1), e.w, func(r *rawConn, i int) ([]byte, error) {
				n := r.policy.Max() - wire.HeaderSize
				rec := []byte{byte(wire.KindSend), byte(n >> 16), byte(n >> 8), byte(n)}
				if body {
					rec = append(rec, make([]byte, n-1)...)
				}
				return rec, nil
			})
			return fmt.Sprintf("conns=%d streams=%d", attackConns, e.a.streams.Load())
		}
	}
	phases := []struct {
		name       string
		concurrent bool // the attack runs during the honest rounds, not before them
		attack     attackFunc
		// prepare, if set, runs before the attack's window and its CPU
		// and RSS baselines: what it makes is the attack's, but the
		// window measures what the attack makes the server do.
		prepare func(ctx context.Context, e *attackEnv) any
	}{
		{"fetch-subscribe", false, func(ctx context.Context, e *attackEnv) string {
			mbs := strangerMailboxes(ctx, e.t, e.srv.addr, "127.0.0.2", strangerBoxes, strangerMsgs)
			e.settle()
			e.a.streamFlood(ctx, e.srv.addr, ipsFrom(3, addrs), e.w, func(r *rawConn, i int) ([]byte, error) {
				mb := mbs[i%len(mbs)]
				if i < subStreams {
					return r.signed(&wire.Subscribe{ReceiveID: mb.ReceiveID}, mb.Key)
				}
				return r.signed(&wire.Fetch{ReceiveID: mb.ReceiveID, Limit: wire.MaxFetchLimit}, mb.Key)
			})
			return fmt.Sprintf("addrs=%d conns=%d streams=%d mailboxes=%d×%.1fMiB", addrs, addrs*attackConns, e.a.streams.Load(),
				strangerBoxes, float64(strangerMsgs*128<<10)/mib)
		}, nil},
		{"record-header", false, header(false), nil},
		{"kt-publish", true, func(ctx context.Context, e *attackEnv) string {
			return e.prepared.(*ktHelper).flood(ctx, e)
		}, func(_ context.Context, e *attackEnv) any {
			// The attacker is a process of its own, as it would be (on
			// a machine of its own): its client's work (TLS, records
			// of 15 KiB bindings) would otherwise share this process's
			// scheduler with the honest pair. It registers its accounts
			// first: registering is OPAQUE work the registration limits
			// (not the publish budgets) bound; the window measures what
			// publishing makes the server do.
			return startKTHelper(e)
		}},
		{"record-body", false, header(true), nil},
	}
	ran := 0
	for _, ph := range phases {
		if len(only) > 0 && !slices.Contains(only, ph.name) {
			continue
		}
		ran++
		t.Run(ph.name, func(t *testing.T) { rssPhase(t, ph.name, ph.concurrent, ph.prepare, ph.attack) })
	}
	if ran == 0 {
		t.Fatalf("QPC_RSS_PHASES=%q names no attack", os.Getenv("QPC_RSS_PHASES"))
	}
}

// attackEnv is what an attack works with.
type attackEnv struct {
	t      *testing.T
	srv    *serverProc
	a      *attack
	w      *rssWatch
	settle func() // take the baseline again, after the attack's own setup
	// prepared is what the phase's prepare made.
	prepared any
}

// attackFunc runs an attack until it is established (or, concurrent,
// until ctx ends) and describes its size.
type attackFunc func(ctx context.Context, e *attackEnv) string

// rssPhase runs one attack against a fresh server and checks its bounds.
func rssPhase(t *testing.T, name string, concurrent bool, prepare func(context.Context, *attackEnv) any, start attackFunc) {
	srv := startServerFlags(t, rssFlags()...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// The honest pair, on 127.0.0.1; every attacker has addresses of its
	// own, so the per-address caps stay at their defaults.
	p := &honestPair{toks: mintTokens(ctx, t, srv.addr, honestTokens)}
	cs := dialAll(ctx, t, srv.addr, 2, 2)
	p.alice, p.bob = cs[0], cs[1]
	var err error
	if p.mb, err = p.bob.CreateMailbox(ctx, p.toks[0]); err != nil {
		t.Fatal(err)
	}
	p.toks = p.toks[1:]
	if p.sub, err = p.bob.Subscribe(ctx, p.mb, 0); err != nil {
		t.Fatal(err)
	}
	defer p.sub.Close()

	p.sample(ctx, t, 20, 0) // warm up
	// The unloaded rounds are paced as the loaded ones are: a round
	// after a pause waits for the scheduler on a busy machine, one right
	// after another does not, so back-to-back unloaded rounds against
	// paced loaded ones would measure the pause, not the attack. A paced
	// phase samples half its rounds on each side (the window's length).
	n, gap := rounds, time.Duration(0)
	if concurrent {
		n, gap = rounds/2, ktWindow/rounds
	}
	unloaded := p.sample(ctx, t, n, gap)
	time.Sleep(time.Second)
	streams0 := srv.streamsOpen(t)
	base, baseAnon, baseFile := srv.memStatus(t)

	e := &attackEnv{t: t, srv: srv, a: &attack{}}
	e.w = watchRSS(t, srv, base)
	e.settle = func() {
		// The attacker's own mailboxes are stored data, not the attack's
		// memory: measure from after they are written.
		time.Sleep(500 * time.Millisecond)
		base, baseAnon, baseFile = srv.memStatus(t)
		e.w.rebase(base)
	}
	actx, acancel := context.WithCancel(ctx)
	if prepare != nil {
		e.prepared = prepare(actx, e)
	}
	var what string
	var loaded []time.Duration
	// CPU of the server and of this process (the attacker's client side
	// and the honest pair) while the attack runs.
	srvCPU0, selfCPU0, wall0 := srv.cpu(t), selfCPU(t), time.Now()
	if concurrent {
		done := make(chan struct{})
		go func() { defer close(done); what = start(actx, e) }()
		// As the other phases let their attack settle before the honest
		// rounds, the opening burst (every account's publish burst at
		// once: 6 MB of records landing in a few tens of milliseconds,
		// which any bandwidth flood would equal) lands first; the rounds
		// are spread over ktWindow after it, through the epochs that
		// commit the burst and the publishes that go on.
		time.Sleep(ktSettle)
		loaded = p.sample(ctx, t, rounds, ktWindow/rounds)
		acancel()
		<-done
	} else {
		what = start(actx, e)
		// Let the server take every stream and load what it will.
		time.Sleep(2 * time.Second)
		if !e.w.abort.Load() {
			loaded = p.sample(ctx, t, rounds, 0)
		}
		acancel()
	}
	srvCPU, testCPU, wall := srv.cpu(t)-srvCPU0, selfCPU(t)-selfCPU0, time.Since(wall0)
	peak, anon, file := e.w.end()
	e.a.close()
	srv.alive(t)
	if err, _ := e.a.firstEr.Load().(error); err != nil {
		t.Logf("%d attack errors, the first: %v", e.a.errs.Load(), err)
	}
	// The server ends the attack's streams; then the unloaded sample
	// after it.
	deadline := time.Now().Add(40 * time.Second)
	for srv.streamsOpen(t) > streams0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	unloaded = append(unloaded, p.sample(ctx, t, n, gap)...)
	u99 := p99(unloaded)

	var l50, l99 time.Duration
	if len(loaded) > 0 {
		l50, l99 = p50(loaded), p99(loaded)
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	fmt.Printf("rsstest: phase=%s %s rss_base_mib=%.1f (anon %.1f file %.1f) rss_peak_mib=%.1f (anon %.1f file %.1f) growth_mib=%.1f bound_mib=%d aborted=%v unloaded_p50_ms=%.2f unloaded_p99_ms=%.2f loaded_p50_ms=%.2f loaded_p99_ms=%.2f p99_ratio=%.2f rounds=%d+%d attack_errors=%d cpu_server_s=%.1f cpu_test_s=%.1f window_s=%.1f loadavg=%s flags=%q\n",
		name, what, float64(base)/mib, float64(baseAnon)/mib, float64(baseFile)/mib,
		float64(peak)/mib, float64(anon)/mib, float64(file)/mib, float64(peak-base)/mib, rssBound/mib, e.w.abort.Load(),
		ms(p50(unloaded)), ms(u99), ms(l50), ms(l99), float64(l99)/float64(u99), len(unloaded), len(loaded),
		e.a.errs.Load(), srvCPU.Seconds(), testCPU.Seconds(), wall.Seconds(), loadkit.LoadAvg(), rssFlags())

	if g := peak - base; g > rssBound {
		t.Errorf("the server's RSS grew by %.1f MiB (from %.1f to %.1f MiB), bound %d MiB",
			float64(g)/mib, float64(base)/mib, float64(peak)/mib, rssBound/mib)
	}
	switch {
	case len(loaded) == 0:
		t.Errorf("no honest round ran under the attack (stopped at %.0f MiB of growth)", float64(peak-base)/mib)
	case l99 > 2*u99 && l99-u99 > p99Slack:
		t.Errorf("honest p99 %v under the attack, more than twice the unloaded %v and %v above it", l99, u99, p99Slack)
	}
	if e.a.streams.Load() == 0 {
		t.Error("the attack never got going")
	}
}
