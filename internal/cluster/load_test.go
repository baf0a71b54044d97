package cluster_test

import (
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicprochat/qpc/account"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/internal/cluster"
	"github.com/quicprochat/qpc/internal/loadtest/loadkit"
	"github.com/quicprochat/qpc/internal/pgtest"
	"github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/wire"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// loadFlags raise a node's limits for a load test (every client comes
// from 127.0.0.1; one connection mints every token), as
// internal/loadtest does, with tokens required as in production.
func loadFlags(maxConns int) []string {
	return []string{
		"--require-tokens=true",
		"--token-quota", "1048576",
		"--max-conns", fmt.Sprint(maxConns),
		"--max-conns-per-addr", fmt.Sprint(maxConns),
		"--max-streams-per-addr", fmt.Sprint(100 * maxConns),
		"--max-streams-total", fmt.Sprint(100 * maxConns),
		"--request-rate", "100000",
		"--request-burst", "100000",
		// Every account of a test registers from 127.0.0.1.
		"--register-rate", "1000",
		"--register-burst", "1000",
		"--register-source-rate", "1000",
		"--register-source-burst", "1000",
	}
}

// clientOptions: a short idle timeout, so that a client whose node was
// killed notices within seconds and moves to another endpoint (a
// connection merely slow on a loaded machine that times out moves too,
// which is as correct: sends are retried under their message IDs,
// subscriptions resume after their cursor), and retries enough for a
// loaded CI machine.
var clientOptions = protocol.Options{
	HandshakeTimeout: 10 * time.Second,
	IdleTimeout:      4 * time.Second,
	RequestTimeout:   15 * time.Second,
	MaxAttempts:      4,
	BaseBackoff:      50 * time.Millisecond,
	MaxBackoff:       500 * time.Millisecond,
}

var cheapKSF = account.WithKSF(account.KSFParams{Time: 1, MemoryKiB: 1024, Threads: 1})

// mintTokens registers one account through addr and has it issue n
// tokens. Tokens carry nothing of the account (the server cannot link
// issuance to redemption), so one account stands for all clients; with a
// shared token secret a token minted through one node is spent through
// any other.
func mintTokens(ctx context.Context, t *testing.T, addr string, n int) [][]byte {
	t.Helper()
	c, err := protocol.Dial(ctx, addr, clientOptions)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	var dev account.DeviceID
	rand.Read(dev[:])
	handle := fmt.Sprintf("loadtest%x", dev[:4]) // one account per run
	sess, err := c.Register(ctx, handle, []byte("load test password"), dev, handle, cheapKSF)
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	keys, err := c.TokenKeys(ctx)
	if err != nil {
		t.Fatalf("token keys: %v", err)
	}
	key := keys.Keys[keys.Current]
	out := make([][]byte, 0, n)
	for len(out) < n {
		toks, err := c.IssueTokens(ctx, sess, key, tokens.MaxBatch)
		if err != nil {
			t.Fatalf("issue tokens: %v", err)
		}
		for _, tok := range toks {
			raw, err := tok.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, raw)
		}
	}
	return out[:n]
}

// loadOpts is one load run.
type loadOpts struct {
	clients  int
	window   time.Duration
	interval time.Duration
	drain    time.Duration
	// node places client i on a node when not failover; i % len(nodes)
	// when nil.
	node func(i int) int
	// at, if set, runs once at half the window (for example a kill).
	at func()
	// pre and post, if set, run just before the send window and after
	// the last delivery's ack (for costs per message: every send, push
	// and ack of the run falls between them).
	pre, post func()
	// failover: every client dials the cluster's one multi-endpoint
	// address (endpoints in a random order) and relies on the client's
	// own failover (client/protocol) when its node dies; otherwise client
	// i dials node(i)'s single address.
	failover bool
}

// loadResult is what a run measured.
type loadResult struct {
	sent, delivered  int
	lost, duplicated int
	crossed          int // first deliveries whose Send was acknowledged by another node than the receiver's
	bad, unacked     int
	sendErrs         int
	dupAcks          int     // sends the server called duplicates
	failovers        int     // times a client's Send was answered by another node than its previous one
	rate             float64 // acknowledged sends per second of the window
	p50, p99         float64 // send start → delivery, ms
	sendP50, sendP99 float64 // send round trip, ms
	cpuPct           float64 // the nodes' CPU, % of one core, summed
	window           time.Duration
	load0, load1     string
}

func (r loadResult) String() string {
	return fmt.Sprintf("sent=%d delivered=%d lost=%d duplicated=%d crossed=%d msgs_per_s=%.1f p50_ms=%.2f p99_ms=%.2f send_p50_ms=%.2f send_p99_ms=%.2f nodes_cpu_pct=%.0f failovers=%d dup_acks=%d send_errors=%d loadavg=%s..%s window_s=%.1f",
		r.sent, r.delivered, r.lost, r.duplicated, r.crossed, r.rate, r.p50, r.p99, r.sendP50, r.sendP99, r.cpuPct, r.failovers, r.dupAcks, r.sendErrs, r.load0, r.load1, r.window.Seconds())
}

// check fails t unless the run kept the exactly-once promise: every
// acknowledged send delivered once, nothing delivered that was not
// acknowledged, nothing corrupt, no send left failed. A send the server
// called a duplicate is one the client retried after its first attempt
// was committed (the answer was lost with a dying node): allowed only
// with failover (and it must still be delivered once: a fresh send
// wrongly called a duplicate is never delivered, a loss).
func (r loadResult) check(t *testing.T, failover bool) {
	t.Helper()
	if r.lost != 0 || r.duplicated != 0 {
		t.Errorf("lost=%d duplicated=%d, want 0 and 0", r.lost, r.duplicated)
	}
	if r.bad != 0 || r.unacked != 0 {
		t.Errorf("%d misrouted or corrupt deliveries, %d delivered but never acknowledged", r.bad, r.unacked)
	}
	if !failover && r.dupAcks != 0 {
		t.Errorf("%d fresh sends called duplicates", r.dupAcks)
	}
	if r.sendErrs != 0 {
		t.Errorf("%d sends failed for good", r.sendErrs)
	}
}

// lclient is one simulated client: a connection, a mailbox and a push
// subscription on it.
type lclient struct {
	i    int
	mb   *protocol.Mailbox
	conn *protocol.Conn

	mu   sync.Mutex
	last int // node of the last answered Send, -1 before the first
}

// tracker is the run's ledger.
type tracker struct {
	mu        sync.Mutex
	acked     map[uint64]int // (from, seq) → node that acknowledged it
	delivered map[uint64]int // (from, seq) → times delivered
	lats      []time.Duration
	sendRTTs  []time.Duration
	early     map[uint64]int // (from, seq) → receiving node, for deliveries before their ack was recorded
	crossed   int
	bad       int
	nAcked    atomic.Int64
	nDeliv    atomic.Int64
}

func (tr *tracker) deliver(at, atNode int, m protocol.Message, now time.Duration) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	e, ok := loadkit.Open(m.Envelope, at, m.ID)
	if !ok {
		tr.bad++
		return
	}
	k := loadkit.Key(e.From, e.Seq)
	tr.delivered[k]++
	if tr.delivered[k] == 1 {
		tr.lats = append(tr.lats, now-e.Sent)
		tr.nDeliv.Add(1)
		// A delivery that arrives before its Send returned is counted
		// once the ledger has the acknowledging node; deliveries are
		// matched against the ledger at the end for the loss check.
		if n, ok := tr.acked[k]; ok && n != atNode {
			tr.crossed++
		} else if !ok {
			tr.early[k] = atNode
		}
	}
}

// runLoad runs o against the cluster: each client sends one message per
// interval to a random other client for the window, receivers ack once a
// second, and the ledger is checked after a drain.
func runLoad(t *testing.T, cl *cluster.Cluster, o loadOpts) loadResult {
	t.Helper()
	if o.node == nil {
		o.node = func(i int) int { return i % len(cl.Nodes) }
	}
	loadkit.RaiseNoFile(t, uint64(o.clients)+1024)
	ctx, cancel := context.WithTimeout(context.Background(), o.window+o.drain+5*time.Minute)
	defer cancel()

	sends := int(o.window/o.interval) + 2
	// One token per mailbox, one per wire.SendsPerToken sends on a
	// connection, and slack for moves to new connections.
	perClient := (sends+wire.SendsPerToken-1)/wire.SendsPerToken + 8
	toks := mintTokens(ctx, t, cl.Nodes[0].Addr(), o.clients*(perClient+1))

	clients := make([]*lclient, o.clients)
	subs := make([]*protocol.Subscription, o.clients)
	{
		var wg sync.WaitGroup
		errs := make([]error, o.clients)
		sem := make(chan struct{}, 16)
		for i := range o.clients {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				addr := cl.Address()
				if !o.failover {
					addr = cl.Nodes[o.node(i)].Addr()
				}
				c := &lclient{i: i, last: -1}
				clients[i] = c
				for attempt := 0; attempt < 3; attempt++ {
					dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
					c.conn, errs[i] = protocol.Dial(dctx, addr, clientOptions)
					dcancel()
					if errs[i] == nil {
						break
					}
				}
				if errs[i] != nil {
					return
				}
				c.mb, errs[i] = c.conn.CreateMailbox(ctx, toks[i])
				if errs[i] == nil {
					subs[i], errs[i] = c.conn.Subscribe(ctx, c.mb, 0)
				}
			}()
		}
		wg.Wait()
		// The run's connections end with it (not with the test), so
		// that runs after it do not share the nodes with idle clients.
		defer func() {
			for _, c := range clients {
				if c != nil && c.conn != nil {
					c.conn.Close()
				}
			}
		}()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("client %d: dial, create mailbox and subscribe: %v", i, err)
			}
		}
	}
	toks = toks[o.clients:]

	tr := &tracker{acked: map[uint64]int{}, delivered: map[uint64]int{}, early: map[uint64]int{}}
	var moves atomic.Int64
	nodeOf := func(c *protocol.Conn) int { return cl.NodeOf(c.Endpoint()) }
	epoch := time.Now()
	stop := make(chan struct{})

	// Receivers: read the subscription and ack once a second (at a phase
	// of their own). The subscription resumes by itself after a transport
	// failure (client/protocol), on whichever endpoint the connection
	// reaches; if it ends for good, the run fails.
	var rwg sync.WaitGroup
	for i, c := range clients {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			sub := subs[i]
			var pending []wire.MessageID
			flush := func() {
				if len(pending) == 0 {
					return
				}
				actx, acancel := context.WithTimeout(ctx, 30*time.Second)
				_, err := c.conn.Ack(actx, c.mb, pending)
				acancel()
				if err == nil {
					pending = nil
				} // else kept for the next flush
			}
			phase := time.After(time.Duration(mrand.Int64N(int64(time.Second))))
			tick := time.NewTicker(time.Second)
			tick.Stop()
			defer tick.Stop()
			for {
				select {
				case m, ok := <-sub.C:
					if !ok {
						t.Errorf("client %d: subscription ended: %v", i, sub.Err())
						return
					}
					tr.deliver(i, nodeOf(c.conn), m, time.Since(epoch))
					pending = append(pending, m.ID)
				case <-phase:
					tick.Reset(time.Second)
					flush()
				case <-tick.C:
					flush()
				case <-stop:
					flush()
					sub.Close()
					return
				}
			}
		}()
	}

	var cpu0 []time.Duration
	for _, n := range cl.Nodes {
		cpu0 = append(cpu0, n.CPU(t))
	}
	res := loadResult{load0: loadkit.LoadAvg()}
	var sendErrs, dupAcks atomic.Int64
	if o.pre != nil {
		o.pre()
	}
	windowStart := time.Now()
	end := windowStart.Add(o.window)
	if o.at != nil {
		go func() {
			time.Sleep(o.window / 2)
			o.at()
		}()
	}
	var swg sync.WaitGroup
	for i, c := range clients {
		swg.Add(1)
		go func() {
			defer swg.Done()
			mine := toks[i*perClient : (i+1)*perClient]
			next := 0
			loadkit.Sends(i, o.clients, sends, o.interval, end, func(seq, to int) bool {
				id := protocol.NewMessageID()
				sent := time.Since(epoch)
				env := loadkit.Encode(i, to, seq, sent, id)
				sctx, scancel := context.WithTimeout(ctx, 60*time.Second)
				dup, spent, err := c.conn.SendPaid(sctx, clients[to].mb.SendID, id, env, mine[next])
				scancel()
				if spent {
					next++
				}
				if err == nil {
					node := nodeOf(c.conn)
					c.mu.Lock()
					if c.last >= 0 && c.last != node {
						moves.Add(1)
					}
					c.last = node
					c.mu.Unlock()
					tr.mu.Lock()
					tr.sendRTTs = append(tr.sendRTTs, time.Since(epoch)-sent)
					tr.acked[loadkit.Key(i, seq)] = node
					tr.mu.Unlock()
					tr.nAcked.Add(1)
					if dup {
						dupAcks.Add(1)
					}
				}
				if err != nil {
					sendErrs.Add(1)
					t.Errorf("client %d: send %d: %v", i, seq, err)
				}
				return next < len(mine)
			})
		}()
	}
	swg.Wait()
	res.window = time.Since(windowStart)
	for k, n := range cl.Nodes {
		if n.Running() {
			res.cpuPct += 100 * (n.CPU(t) - cpu0[k]).Seconds() / res.window.Seconds()
		}
	}
	res.load1 = loadkit.LoadAvg()

	drainStart := time.Now()
	for tr.nDeliv.Load() < tr.nAcked.Load() && time.Since(drainStart) < o.drain {
		time.Sleep(50 * time.Millisecond)
	}
	// A moment more, so that a duplicate still in flight is seen.
	time.Sleep(500 * time.Millisecond)
	close(stop)
	rwg.Wait()
	if o.post != nil {
		o.post()
	}

	tr.mu.Lock()
	defer tr.mu.Unlock()
	res.lost, res.duplicated, res.unacked = loadkit.Tally(tr.acked, tr.delivered)
	for k, node := range tr.early {
		if a, ok := tr.acked[k]; ok && a != node {
			res.crossed++
		}
	}
	res.crossed += tr.crossed
	slices.Sort(tr.lats)
	slices.Sort(tr.sendRTTs)
	res.sent, res.delivered, res.bad = len(tr.acked), len(tr.lats), tr.bad
	res.sendErrs, res.dupAcks = int(sendErrs.Load()), int(dupAcks.Load())
	res.failovers = int(moves.Load())
	res.rate = float64(res.sent) / res.window.Seconds()
	res.p50, res.p99 = loadkit.Percentile(tr.lats, 0.50), loadkit.Percentile(tr.lats, 0.99)
	res.sendP50, res.sendP99 = loadkit.Percentile(tr.sendRTTs, 0.50), loadkit.Percentile(tr.sendRTTs, 0.99)
	return res
}
