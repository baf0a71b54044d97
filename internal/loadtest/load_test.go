package loadtest

import (
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quicprochat/qpc/account"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/internal/loadtest/loadkit"
	"github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/wire"
)

// size is one run's dimensions.
type size struct {
	clients  int           // TestLoad: concurrent clients
	window   time.Duration // TestLoad: send window
	interval time.Duration // TestLoad: each client sends one message per interval
	drain    time.Duration // TestLoad: longest wait for deliveries after the window
	idle     int           // TestIdle: idle connections
}

var (
	small = size{clients: 50, window: 10 * time.Second, interval: time.Second, drain: 20 * time.Second, idle: 500}
	full  = size{clients: 1000, window: 60 * time.Second, interval: time.Second, drain: 60 * time.Second, idle: 10_000}
)

// runSize is full with QPC_LOAD=1 and small otherwise.
// QPC_LOAD_INTERVAL (a duration) changes each client's send interval, and
// so the offered load: clients / interval messages per second.
func runSize(t *testing.T) size {
	var sz size
	switch v := os.Getenv("QPC_LOAD"); v {
	case "", "0":
		sz = small
	case "1":
		sz = full
	default:
		t.Fatalf("QPC_LOAD=%q: want 1 (full size) or unset", v)
	}
	if v := os.Getenv("QPC_LOAD_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("QPC_LOAD_INTERVAL=%q: want a positive duration", v)
		}
		sz.interval = d
	}
	return sz
}

// selfCPU is this process's user plus system CPU time so far: the
// clients' side of the load.
func selfCPU(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// clientOptions: the defaults, with bounded retries so a broken run ends.
var clientOptions = protocol.Options{MaxAttempts: 6, BaseBackoff: 50 * time.Millisecond, MaxBackoff: time.Second}

// cheapKSF keeps the one registration cheap; login cost is measured by
// qpc-bench report, not here.
var cheapKSF = account.WithKSF(account.KSFParams{Time: 1, MemoryKiB: 1024, Threads: 1})

// dialAll dials n connections, at most par at a time.
func dialAll(ctx context.Context, t *testing.T, addr string, n, par int) []*protocol.Conn {
	t.Helper()
	conns := make([]*protocol.Conn, n)
	errs := make([]error, n)
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			for attempt := 0; attempt < 3; attempt++ {
				dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				conns[i], errs[i] = protocol.Dial(dctx, addr, clientOptions)
				cancel()
				if errs[i] == nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("dial %d of %d: %v", i, n, err)
		}
	}
	return conns
}

// mintTokens registers one account over its own connection and has it
// issue n tokens, in batches of tokens.MaxBatch, two requests in flight.
// The tokens are anonymous: whoever spends one is not linked to the
// account that fetched it, so one account can stand for all the clients.
func mintTokens(ctx context.Context, t *testing.T, addr string, n int) [][]byte {
	t.Helper()
	return mintTokensOn(ctx, t, dialAll(ctx, t, addr, 1, 1)[0], "loadtest", n)
}

// mintTokensOn registers handle over c and has it issue n tokens, as
// mintTokens does.
func mintTokensOn(ctx context.Context, t *testing.T, c *protocol.Conn, handle string, n int) [][]byte {
	t.Helper()
	var dev account.DeviceID
	rand.Read(dev[:])
	sess, err := c.Register(ctx, handle, []byte("load test password"), dev, handle, cheapKSF)
	if err != nil {
		t.Fatalf("register %s: %v", handle, err)
	}
	keys, err := c.TokenKeys(ctx)
	if err != nil {
		t.Fatalf("token keys: %v", err)
	}
	key := keys.Keys[keys.Current]
	var (
		mu   sync.Mutex
		out  = make([][]byte, 0, n)
		next atomic.Int64
		wg   sync.WaitGroup
		fail atomic.Value
	)
	batches := (n + tokens.MaxBatch - 1) / tokens.MaxBatch
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(batches) {
				toks, err := c.IssueTokens(ctx, sess, key, tokens.MaxBatch)
				if err != nil {
					fail.Store(err)
					return
				}
				mu.Lock()
				for _, tok := range toks {
					raw, err := tok.MarshalBinary()
					if err != nil {
						fail.Store(err)
					}
					out = append(out, raw)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err, _ := fail.Load().(error); err != nil {
		t.Fatalf("issue tokens: %v", err)
	}
	if len(out) < n {
		t.Fatalf("minted %d tokens, want %d", len(out), n)
	}
	return out[:n]
}

// tracker is the ledger of a run: what was acknowledged, and what each
// receiver saw.
type tracker struct {
	mu        sync.Mutex
	acked     map[uint64]bool // (from, seq) acknowledged by the server
	delivered map[uint64]int  // (from, seq) → times delivered
	lats      []time.Duration // send start → delivery, one per first delivery
	sendRTTs  []time.Duration // send start → Sent, one per acknowledged send
	bad       int             // misrouted, corrupt, or ID mismatch
	sendErrs  int
	dupAcks   int // the server called a fresh send a duplicate
	nAcked    atomic.Int64
	nDeliv    atomic.Int64
}

func (tr *tracker) deliver(at int, m protocol.Message, now time.Duration) {
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
	}
}

func TestLoad(t *testing.T) {
	sz := runSize(t)
	loadkit.RaiseNoFile(t, uint64(sz.clients)+1024)
	srv := startServer(t, sz.clients+100)
	ctx, cancel := context.WithTimeout(context.Background(), sz.window+sz.drain+10*time.Minute)
	defer cancel()

	// Tokens: one per mailbox creation, one per wire.SendsPerToken sends
	// (a token pays for that many Sends on its connection), and a little
	// slack for a client whose ticks run late. QPC_LOAD_TOKEN_PER_SEND=1
	// has every Send carry a token of its own (Conn.Send, as before the
	// allowance): the baseline of the allowance's gain in the same build.
	perSend := os.Getenv("QPC_LOAD_TOKEN_PER_SEND") == "1"
	sends := int(sz.window/sz.interval) + 2
	perClient := sends
	if !perSend {
		perClient = (sends+wire.SendsPerToken-1)/wire.SendsPerToken + 2
	}
	setupStart := time.Now()
	toks := mintTokens(ctx, t, srv.addr, sz.clients*(perClient+1))
	mintTime := time.Since(setupStart)

	conns := dialAll(ctx, t, srv.addr, sz.clients, 32)
	mbs := make([]*protocol.Mailbox, sz.clients)
	subs := make([]*protocol.Subscription, sz.clients)
	{
		var wg sync.WaitGroup
		errs := make([]error, sz.clients)
		sem := make(chan struct{}, 32)
		for i := range sz.clients {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				mbs[i], errs[i] = conns[i].CreateMailbox(ctx, toks[i])
				if errs[i] == nil {
					subs[i], errs[i] = conns[i].Subscribe(ctx, mbs[i], 0)
				}
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("client %d: create mailbox and subscribe: %v", i, err)
			}
		}
	}
	toks = toks[sz.clients:]
	setupTime := time.Since(setupStart)
	srv.alive(t)

	tr := &tracker{acked: map[uint64]bool{}, delivered: map[uint64]int{}}
	epoch := time.Now()

	// Receivers: one per client, acking what arrived once a second. Each
	// acks on a second of its own phase, from a goroutine of its own, as
	// independent clients would: all 1,000 acking in the same instant
	// (QPC_LOAD_ACKS=inline, the old harness) queue every Send of that
	// moment behind a burst of 1,000 Acks at the one writer, and a
	// receiver that waits for its own Ack before reading on counts that
	// wait in the delivery latency of what arrived meanwhile.
	inlineAcks := os.Getenv("QPC_LOAD_ACKS") == "inline"
	var rwg sync.WaitGroup
	for i := range sz.clients {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			ack := func(ids []wire.MessageID) {
				actx, acancel := context.WithTimeout(ctx, 30*time.Second)
				if _, err := conns[i].Ack(actx, mbs[i], ids); err != nil {
					t.Errorf("client %d: ack: %v", i, err)
				}
				acancel()
			}
			var (
				acks    chan []wire.MessageID
				ackDone = make(chan struct{})
			)
			if inlineAcks {
				close(ackDone)
			} else {
				acks = make(chan []wire.MessageID, 4)
				go func() {
					defer close(ackDone)
					for ids := range acks {
						ack(ids)
					}
				}()
			}
			// The first tick comes at a random phase (inline: a second
			// from now, for every receiver alike), then one a second.
			var phase <-chan time.Time
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			tickC := tick.C
			if !inlineAcks {
				tick.Stop()
				tickC = nil
				phase = time.After(time.Duration(mrand.Int64N(int64(time.Second))))
			}
			var pending []wire.MessageID
			flush := func() {
				if len(pending) == 0 {
					return
				}
				if inlineAcks {
					ack(pending)
					pending = pending[:0]
					return
				}
				acks <- pending
				pending = nil
			}
			for {
				select {
				case m, ok := <-subs[i].C:
					if !ok {
						flush()
						if acks != nil {
							close(acks)
						}
						<-ackDone
						return
					}
					tr.deliver(i, m, time.Since(epoch))
					pending = append(pending, m.ID)
				case <-phase:
					phase = nil
					tick.Reset(time.Second)
					tickC = tick.C
					flush()
				case <-tickC:
					flush()
				}
			}
		}()
	}

	// Senders: each client sends one message per interval, starting at a
	// random phase, to a random other client.
	cpu0, self0, load0 := srv.cpu(t), selfCPU(t), loadkit.LoadAvg()
	met0 := srv.metrics(t)
	windowStart := time.Now()
	end := windowStart.Add(sz.window)
	var swg sync.WaitGroup
	for i := range sz.clients {
		swg.Add(1)
		go func() {
			defer swg.Done()
			mine := toks[i*perClient : (i+1)*perClient]
			next := 0 // mine[next] pays when the connection's allowance is used up
			loadkit.Sends(i, sz.clients, sends, sz.interval, end, func(seq, to int) bool {
				id := protocol.NewMessageID()
				sent := time.Since(epoch)
				env := loadkit.Encode(i, to, seq, sent, id)
				sctx, scancel := context.WithTimeout(ctx, 60*time.Second)
				var dup, spent bool
				var err error
				if perSend {
					dup, err = conns[i].Send(sctx, mbs[to].SendID, id, env, mine[next])
					spent = true
				} else {
					dup, spent, err = conns[i].SendPaid(sctx, mbs[to].SendID, id, env, mine[next])
				}
				rtt := time.Since(epoch) - sent
				scancel()
				if spent {
					next++
				}
				tr.mu.Lock()
				if err == nil {
					tr.sendRTTs = append(tr.sendRTTs, rtt)
				}
				switch {
				case err != nil:
					tr.sendErrs++
					t.Errorf("client %d: send %d: %v", i, seq, err)
				default:
					tr.acked[loadkit.Key(i, seq)] = true
					tr.nAcked.Add(1)
					if dup {
						tr.dupAcks++
					}
				}
				tr.mu.Unlock()
				return next < len(mine)
			})
		}()
	}
	swg.Wait()
	window := time.Since(windowStart)
	cpu, selfCPUUsed, load1 := srv.cpu(t)-cpu0, selfCPU(t)-self0, loadkit.LoadAvg()
	rss, hwm := srv.rss(t)
	met1 := srv.metrics(t)
	srv.alive(t)

	// Drain: wait until every acknowledged message has arrived, or the
	// bound.
	drainStart := time.Now()
	for tr.nDeliv.Load() < tr.nAcked.Load() && time.Since(drainStart) < sz.drain {
		time.Sleep(50 * time.Millisecond)
	}
	drain := time.Since(drainStart)
	// A moment more, so a duplicate still in flight would be seen.
	time.Sleep(500 * time.Millisecond)
	for _, s := range subs {
		s.Close()
	}
	rwg.Wait()

	tr.mu.Lock()
	defer tr.mu.Unlock()
	lost, duplicated, unacked := loadkit.Tally(tr.acked, tr.delivered)
	slices.Sort(tr.lats)
	slices.Sort(tr.sendRTTs)
	sent := len(tr.acked)
	rate := float64(sent) / window.Seconds()
	fmt.Printf("loadtest: clients=%d sent=%d delivered=%d lost=%d duplicated=%d msgs_per_s=%.1f p50_ms=%.2f p99_ms=%.2f p999_ms=%.2f server_rss_mib=%.1f server_hwm_mib=%.1f server_cpu_pct=%.1f offered_msgs_per_s=%.0f clients_cpu_pct=%.1f loadavg=%s..%s window_s=%.1f drain_s=%.2f setup_s=%.1f mint_s=%.1f send_errors=%d\n",
		sz.clients, sent, len(tr.lats), lost, duplicated, rate,
		loadkit.Percentile(tr.lats, 0.50), loadkit.Percentile(tr.lats, 0.99), loadkit.Percentile(tr.lats, 0.999),
		float64(rss)/(1<<20), float64(hwm)/(1<<20), 100*cpu.Seconds()/window.Seconds(),
		float64(sz.clients)/sz.interval.Seconds(), 100*selfCPUUsed.Seconds()/window.Seconds(), load0, load1,
		window.Seconds(), drain.Seconds(), setupTime.Seconds(), mintTime.Seconds(), tr.sendErrs)

	// Where the time goes on the server during the window: a Send's and
	// an Ack's request time (read to response written; both wait for the
	// group commit), and the store writer's commits.
	// The Send round trip alone (start of Send to Sent): what of the
	// delivery latency the send path is, the rest being the push.
	fmt.Printf("loadtest-send: token_per_send=%v inline_acks=%v send_p50_ms=%.2f send_p99_ms=%.2f send_p999_ms=%.2f\n",
		perSend, inlineAcks, loadkit.Percentile(tr.sendRTTs, 0.50), loadkit.Percentile(tr.sendRTTs, 0.99), loadkit.Percentile(tr.sendRTTs, 0.999))
	fmt.Printf("loadtest-server: send_ms=%.2f ack_ms=%.2f commits=%.0f mean_commit_ms=%.2f mean_batch_ops=%.1f\n",
		1000*meanDelta(met0, met1, "qpc_request_duration_seconds", `{kind="send"}`),
		1000*meanDelta(met0, met1, "qpc_request_duration_seconds", `{kind="ack"}`),
		met1["qpc_store_commit_duration_seconds_count"]-met0["qpc_store_commit_duration_seconds_count"],
		1000*meanDelta(met0, met1, "qpc_store_commit_duration_seconds", ""),
		meanDelta(met0, met1, "qpc_store_commit_batch_ops", ""))

	if lost != 0 || duplicated != 0 {
		t.Errorf("lost=%d duplicated=%d, want 0 and 0", lost, duplicated)
	}
	if tr.bad != 0 || unacked != 0 || tr.dupAcks != 0 {
		t.Errorf("%d misrouted or corrupt deliveries, %d delivered but never acknowledged, %d fresh sends called duplicates", tr.bad, unacked, tr.dupAcks)
	}
	if tr.sendErrs != 0 {
		t.Errorf("%d sends failed", tr.sendErrs)
	}
	// Every client sent about once per interval: a run that stalled would
	// fall far short.
	if want := float64(sz.clients) * sz.window.Seconds() / sz.interval.Seconds() / 4; float64(sent) < want {
		t.Errorf("only %d messages acknowledged in %v, want at least %.0f", sent, window, want)
	}
	if rss <= 0 || cpu <= 0 {
		t.Errorf("server rss=%d cpu=%v: the process was not measured", rss, cpu)
	}
}

func TestIdle(t *testing.T) {
	sz := runSize(t)
	loadkit.RaiseNoFile(t, uint64(sz.idle)+1024)
	srv := startServer(t, sz.idle+100)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	// Warm up the server's handshake path with one connection, so the
	// baseline is a server that has served, not a fresh one.
	warm := dialAll(ctx, t, srv.addr, 1, 1)[0]
	if _, err := warm.Health(ctx); err != nil {
		t.Fatal(err)
	}
	warm.Close()
	deadline := time.Now().Add(10 * time.Second)
	for srv.openConns(t) != 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
	base, _ := srv.rss(t)

	start := time.Now()
	conns := dialAll(ctx, t, srv.addr, sz.idle, 32)
	dialTime := time.Since(start)
	// Let the handshakes' garbage settle; keep-alives keep the connections.
	time.Sleep(3 * time.Second)
	srv.alive(t)
	// The server counts a connection once its accept loop has taken it,
	// which can trail the client's handshake on a loaded machine: wait
	// for the count (up to 30 s) rather than read it once.
	open := srv.openConns(t)
	for deadline := time.Now().Add(30 * time.Second); open != sz.idle && time.Now().Before(deadline); open = srv.openConns(t) {
		time.Sleep(100 * time.Millisecond)
	}
	rss, hwm := srv.rss(t)
	perConn := float64(rss-base) / float64(sz.idle)
	fmt.Printf("idletest: conns=%d rss_base_mib=%.1f rss_mib=%.1f hwm_mib=%.1f per_conn_kib=%.1f open=%d dial_s=%.1f\n",
		sz.idle, float64(base)/(1<<20), float64(rss)/(1<<20), float64(hwm)/(1<<20), perConn/1024, open, dialTime.Seconds())

	if open != sz.idle {
		t.Errorf("server reports %d open connections, want %d", open, sz.idle)
	}
	if rss <= base {
		t.Errorf("RSS %d with %d connections is not above the baseline %d", rss, sz.idle, base)
	}
	// Every connection still answers, on the connection it was given
	// (the count above shows no redial replaced a dropped one).
	var failed atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, c := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			hctx, hcancel := context.WithTimeout(ctx, 30*time.Second)
			defer hcancel()
			if _, err := c.Health(hctx); err != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d idle connections failed a health request", n, sz.idle)
	}
	if open := srv.openConns(t); open != sz.idle {
		t.Errorf("after the health requests the server reports %d open connections, want %d", open, sz.idle)
	}
}
