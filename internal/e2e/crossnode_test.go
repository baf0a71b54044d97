package e2e

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/internal/pgtest"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/server/store/pgstore"
	"github.com/quicprochat/qpc/wire"
)

// Cross-node delivery (docs/scaling.md, "Cross-node delivery"; ADR
// 0038): real server.Server nodes on one real PostgreSQL database, real
// clients.

// xnNode is one server node on a shared PostgreSQL store.
type xnNode struct {
	addr    string
	srv     *server.Server
	store   *xnStore
	metrics *metrics.Metrics
	logs    *syncBuffer
}

// xnStore is the real PostgreSQL store; it counts the idle sweeps
// its node ran, so a test knows when a purge round finished.
type xnStore struct {
	*pgstore.Store
	sweeps atomic.Int64
}

func (c *xnStore) PurgeIdle(ctx context.Context, now time.Time, idle time.Duration, keep func([store.MailboxIDSize]byte) bool, gone func([store.MailboxIDSize]byte)) (int, error) {
	defer c.sweeps.Add(1)
	return c.Store.PurgeIdle(ctx, now, idle, keep, gone)
}

// startXNNode runs a node on the database at dbURL (its pool's
// application_name is name, so a test can find its connections).
func startXNNode(t *testing.T, dbURL, name string, mutate func(*server.Options)) *xnNode {
	t.Helper()
	dir := t.TempDir()
	if _, err := server.CreateIdentity(dir); err != nil {
		t.Fatal(err)
	}
	id, err := server.LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := &xnNode{metrics: metrics.New("test"), logs: &syncBuffer{}}
	log := slog.New(slog.NewJSONHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	st, err := pgstore.Open(context.Background(), xnURLParam(t, dbURL, "application_name", name), store.Options{Logger: log, WakeKey: xnWakeKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	n.store = &xnStore{Store: st}
	opts := server.Options{Identity: id, Store: n.store, Logger: log, Metrics: n.metrics}
	if mutate != nil {
		mutate(&opts)
	}
	n.srv, err = server.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.addr = id.Address(pc.LocalAddr().String()).String()
	done := make(chan error, 1)
	go func() { done <- n.srv.Serve(pc) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := n.srv.Shutdown(ctx); err != nil {
			t.Errorf("%s: shutdown: %v", name, err)
		}
		if err := <-done; err != nil {
			t.Errorf("%s: serve: %v", name, err)
		}
		st.Close()
	})
	return n
}

// xnWakeKey is the wake key of the test's nodes, derived as qpc-server
// derives it from the token master secret all nodes share.
func xnWakeKey(t *testing.T) []byte {
	t.Helper()
	k, err := store.DeriveWakeKey(bytes.Repeat([]byte{0x5a}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func xnURLParam(t *testing.T, u, key, value string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	q := p.Query()
	q.Set(key, value)
	p.RawQuery = q.Encode()
	return p.String()
}

// xnMetric reads a label-free gauge or counter of m.
func xnMetric(t *testing.T, m *metrics.Metrics, name string) float64 {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, s := range f.GetMetric() {
			if s.GetGauge() != nil {
				return s.GetGauge().GetValue()
			}
			return s.GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// xnWaitFor polls cond for up to 30 s.
func xnWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30 s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func xnDial(t *testing.T, n *xnNode) *protocol.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := protocol.Dial(ctx, n.addr, protocol.Options{MaxAttempts: 8, BaseBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// xnSubscribed creates a mailbox through c and subscribes to it, caught up.
func xnSubscribed(t *testing.T, c *protocol.Conn) (*protocol.Mailbox, *protocol.Subscription) {
	t.Helper()
	ctx := ctxT(t)
	mb, err := c.CreateMailbox(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := c.Subscribe(ctx, mb, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	select {
	case <-sub.CaughtUp():
	case <-ctx.Done():
		t.Fatal("no caught-up marker")
	}
	return mb, sub
}

// xnPushed waits (generously) for the next pushed message, which must be
// want.
func xnPushed(t *testing.T, sub *protocol.Subscription, want []byte, what string) {
	t.Helper()
	select {
	case m, ok := <-sub.C:
		if !ok {
			t.Fatalf("%s: the subscription ended: %v", what, sub.Err())
		}
		if string(m.Envelope) != string(want) {
			t.Fatalf("%s: pushed the wrong envelope", what)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: nothing pushed within 20 s", what)
	}
}

// TestCrossNodeDelivery: a subscriber connected to node B gets a message
// sent through node A at once (no polling: without the store's wake-ups
// B never learns of it), again and again, and the deletion of its
// mailbox through A ends the subscription on B with NOT_FOUND. B counts
// the wake-ups and reports its listener up.
func TestCrossNodeDelivery(t *testing.T) {
	t.Parallel()
	db := pgtest.DB(t)
	a, b := startXNNode(t, db, "qpc-deliver-a", nil), startXNNode(t, db, "qpc-deliver-b", nil)
	xnWaitFor(t, "B's wake-up listener up", func() bool { return xnMetric(t, b.metrics, "qpc_store_wake_listener_up") == 1 })
	ctx := ctxT(t)
	sender, owner := xnDial(t, a), xnDial(t, b)
	mb, sub := xnSubscribed(t, owner)
	for i := range 3 {
		if _, err := sender.Send(ctx, mb.SendID, protocol.NewMessageID(), envelope(i), nil); err != nil {
			t.Fatal(err)
		}
		xnPushed(t, sub, envelope(i), "a send through A to a subscriber on B")
	}
	if got := xnMetric(t, b.metrics, "qpc_store_wakes_total"); got < 3 {
		t.Errorf("qpc_store_wakes_total on B = %v, want at least 3", got)
	}
	if got := xnMetric(t, a.metrics, "qpc_store_wakes_total"); got != 0 {
		t.Errorf("qpc_store_wakes_total on A = %v: A heard its own sends back", got)
	}
	// The owner deletes the mailbox through A: B's subscription ends.
	if err := xnDial(t, a).DeleteMailbox(ctx, mb); err != nil {
		t.Fatal(err)
	}
	select {
	case _, ok := <-sub.C:
		if ok {
			t.Fatal("a message pushed after the mailbox was deleted")
		}
		if err := sub.Err(); !isCode(err, wire.CodeNotFound) {
			t.Fatalf("the subscription on B ended with %v, want NOT_FOUND", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the subscription on B outlived its mailbox's deletion through A by 20 s")
	}
}

// xnProxy forwards TCP connections to PostgreSQL; while refusing it
// closes new ones at once, as a database that is unreachable does.
type xnProxy struct {
	ln       net.Listener
	target   string
	refusing atomic.Bool
	refused  atomic.Int64
	wg       sync.WaitGroup
}

func startXNProxy(t *testing.T, target string) *xnProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &xnProxy{ln: ln, target: target}
	var conns sync.Map
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if p.refusing.Load() {
				p.refused.Add(1)
				c.Close()
				continue
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			conns.Store(c, up)
			p.wg.Go(func() { io.Copy(up, c); up.Close() })
			p.wg.Go(func() { io.Copy(c, up); c.Close() })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		conns.Range(func(k, v any) bool { k.(net.Conn).Close(); v.(net.Conn).Close(); return true })
		p.wg.Wait()
	})
	return p
}

// xnViaProxy is dbURL with its host replaced by a proxy to it.
func xnViaProxy(t *testing.T, dbURL string) (string, *xnProxy) {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	p := startXNProxy(t, u.Host)
	u.Host = p.ln.Addr().String()
	return u.String(), p
}

// xnTerminateListener ends the wake-up listener connection of the node
// whose pool is named app, from the database's side.
func xnTerminateListener(t *testing.T, db, app string) {
	t.Helper()
	ctx := ctxT(t)
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1 AND datname = current_database()`, app+" listener").Scan(&n); err != nil || n != 1 {
		t.Fatalf("terminating %s's listener: %d terminated, %v", app, n, err)
	}
}

// TestCrossNodeListenerReconnect: B's wake-up listener connection is
// killed (pg_terminate_backend) while the database is unreachable from B
// for new connections; a message sent through A meanwhile (its
// notification reaches nobody on B) is still pushed to the subscriber on
// B once the listener is back, since B wakes every subscription after a
// reconnect; later sends are pushed as before.
func TestCrossNodeListenerReconnect(t *testing.T) {
	t.Parallel()
	db := pgtest.DB(t)
	bURL, proxy := xnViaProxy(t, db)
	a, b := startXNNode(t, db, "qpc-reconnect-a", nil), startXNNode(t, bURL, "qpc-reconnect-b", nil)
	xnWaitFor(t, "B's wake-up listener up", func() bool { return xnMetric(t, b.metrics, "qpc_store_wake_listener_up") == 1 })
	ctx := ctxT(t)
	sender, owner := xnDial(t, a), xnDial(t, b)
	mb, sub := xnSubscribed(t, owner)
	if _, err := sender.Send(ctx, mb.SendID, protocol.NewMessageID(), envelope(0), nil); err != nil {
		t.Fatal(err)
	}
	xnPushed(t, sub, envelope(0), "before the listener is killed")

	proxy.refusing.Store(true)
	xnTerminateListener(t, db, "qpc-reconnect-b")
	xnWaitFor(t, "B's listener down and refused a reconnect", func() bool {
		return xnMetric(t, b.metrics, "qpc_store_wake_listener_up") == 0 && proxy.refused.Load() > 0
	})
	if _, err := sender.Send(ctx, mb.SendID, protocol.NewMessageID(), envelope(1), nil); err != nil {
		t.Fatal(err)
	}
	proxy.refusing.Store(false)
	xnPushed(t, sub, envelope(1), "a send while B's listener was away")
	if _, err := sender.Send(ctx, mb.SendID, protocol.NewMessageID(), envelope(2), nil); err != nil {
		t.Fatal(err)
	}
	xnPushed(t, sub, envelope(2), "a send after B's listener is back")
}

// TestCrossNodeSubscribedNotPurged: a mailbox subscribed on node B, into
// which nothing arrives and from which nothing is fetched for longer than
// mailbox_ttl, is not deleted by another node's idle sweep, whose keep
// func knows only its own (empty) set of subscriptions. Days pass one at
// a time on a shared clock; each day the other node (a store of its own
// on the database, as node A's sweep) sweeps first, then B runs its
// purge rounds. An unsubscribed mailbox of the same age is deleted
// meanwhile, and the subscription still gets a send through A at the
// end.
func TestCrossNodeSubscribedNotPurged(t *testing.T) {
	t.Parallel()
	db := pgtest.DB(t)
	clk := &clock{}
	opts := func(o *server.Options) {
		o.Now, o.MailboxTTL, o.PurgeInterval = clk.now, 2*24*time.Hour, 20*time.Millisecond
	}
	a, b := startXNNode(t, db, "qpc-purge-a", opts), startXNNode(t, db, "qpc-purge-b", opts)
	other, err := pgstore.Open(context.Background(), db, store.Options{Logger: slog.New(slog.DiscardHandler), WakeKey: xnWakeKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ctx := ctxT(t)
	sender, owner := xnDial(t, a), xnDial(t, b)
	mb, sub := xnSubscribed(t, owner)
	idle, err := owner.CreateMailbox(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for day := 1; day <= 5; day++ {
		clk.advance(24 * time.Hour)
		if _, err := other.PurgeIdle(ctx, clk.now(), 2*24*time.Hour, nil, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := other.Mailbox(ctx, mb.ReceiveID); err != nil {
			t.Fatalf("day %d: the mailbox subscribed on B is gone after another node's idle sweep: %v", day, err)
		}
		before := b.store.sweeps.Load()
		xnWaitFor(t, "B's purge rounds", func() bool { return b.store.sweeps.Load() >= before+2 })
	}
	if _, err := other.Mailbox(ctx, idle.ReceiveID); err == nil {
		t.Fatal("the unsubscribed mailbox was not purged: the sweeps did not run")
	}
	if _, err := sender.Send(ctx, mb.SendID, protocol.NewMessageID(), envelope(0), nil); err != nil {
		t.Fatal(err)
	}
	xnPushed(t, sub, envelope(0), "a send through A after five idle days")
}

// TestCrossNodeLatency measures how long a send through node A takes to
// be pushed to a subscriber on node B (woken by the database's
// notification) against one on A itself (woken by A's hub), in the same
// run, interleaved: rounds of one send to each, medians. By default it
// runs a few rounds and asserts only that both paths deliver;
// QPC_BENCH=1 runs 5 batches of 40 and logs the figures
// (docs/scaling.md, "Cross-node delivery").
func TestCrossNodeLatency(t *testing.T) {
	db := pgtest.DB(t)
	a, b := startXNNode(t, db, "qpc-latency-a", nil), startXNNode(t, db, "qpc-latency-b", nil)
	xnWaitFor(t, "B's wake-up listener up", func() bool { return xnMetric(t, b.metrics, "qpc_store_wake_listener_up") == 1 })
	sender := xnDial(t, a)
	local, sameSub := xnSubscribed(t, xnDial(t, a))
	remote, crossSub := xnSubscribed(t, xnDial(t, b))
	batches, rounds := 1, 5
	if benchEnabled() {
		batches, rounds = 5, 40
	}
	deliver := func(mb *protocol.Mailbox, sub *protocol.Subscription, i int) time.Duration {
		ctx := ctxT(t)
		start := time.Now()
		if _, err := sender.Send(ctx, mb.SendID, protocol.NewMessageID(), envelope(i), nil); err != nil {
			t.Fatal(err)
		}
		xnPushed(t, sub, envelope(i), "latency round")
		return time.Since(start)
	}
	var same, cross []time.Duration
	var ratios []float64
	for batch := range batches {
		var s, c []time.Duration
		for i := range rounds {
			// Alternate which goes first, so neither always follows the other.
			if i%2 == 0 {
				s = append(s, deliver(local, sameSub, i))
				c = append(c, deliver(remote, crossSub, i))
			} else {
				c = append(c, deliver(remote, crossSub, i))
				s = append(s, deliver(local, sameSub, i))
			}
		}
		ms, mc := xnMedian(s), xnMedian(c)
		same, cross = append(same, ms), append(cross, mc)
		ratios = append(ratios, float64(mc)/float64(ms))
		t.Logf("batch %d: send-to-push median same node %v, cross node %v, ratio %.2f", batch, ms, mc, float64(mc)/float64(ms))
	}
	slices.Sort(ratios)
	t.Logf("medians over %d batches of %d: same node %v, cross node %v, cross/same %.2f (ratios %.2f)",
		batches, rounds, xnMedian(same), xnMedian(cross), ratios[len(ratios)/2], ratios)
}

func xnMedian(d []time.Duration) time.Duration {
	d = slices.Clone(d)
	slices.Sort(d)
	return d[len(d)/2]
}
