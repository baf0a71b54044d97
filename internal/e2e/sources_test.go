package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/wire"
)

// rawFrom dials ts with raw QUIC from ip (any of 127/8 on Linux), so that
// the server counts the connection as that address's, and runs the hello.
func rawFrom(t *testing.T, ts *testServer, ip string) *quic.Conn {
	t.Helper()
	return rawFromWith(t, ts, ip, nil)
}

// rawFromWith is rawFrom with a QUIC configuration of the client's own
// (nil: quic-go's defaults).
func rawFromWith(t *testing.T, ts *testServer, ip string, conf *quic.Config) *quic.Conn {
	t.Helper()
	pc, err := net.ListenPacket("udp", ip+":0")
	if err != nil {
		t.Fatalf("udp socket on %s: %v", ip, err)
	}
	tr := &quic.Transport{Conn: pc}
	raddr, err := net.ResolveUDPAddr("udp", ts.host)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	qc, err := tr.Dial(ctx, raddr, &tls.Config{
		InsecureSkipVerify: true, NextProtos: []string{wire.ALPN}, MinVersion: tls.VersionTLS13,
	}, conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, ""); tr.Close(); pc.Close() })
	hello, _ := wire.AppendMessage(nil, padding.Control, &wire.ClientHello{Versions: []uint16{1}})
	if m, err := rawRoundTrip(t, qc, padding.Control, hello); err != nil {
		t.Fatalf("raw hello: %v", err)
	} else if _, ok := m.(*wire.ServerHello); !ok {
		t.Fatalf("raw hello got %T", m)
	}
	return qc
}

// dialFrom dials ts with the client SDK from ip.
func dialFrom(t *testing.T, ts *testServer, ip string) *protocol.Conn {
	t.Helper()
	pc, err := net.ListenPacket("udp", ip+":0")
	if err != nil {
		t.Fatalf("udp socket on %s: %v", ip, err)
	}
	raddr, err := net.ResolveUDPAddr("udp", ts.host)
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, ts, protocol.Options{PacketConn: pc, RemoteAddr: raddr})
	t.Cleanup(func() { pc.Close() })
	return c
}

// stalled opens n streams on qc that send half a record header and then
// nothing, as a stranger holding streams would.
func stalled(t *testing.T, qc *quic.Conn, n int) []*quic.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var sts []*quic.Stream
	for range n {
		st, err := qc.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Write([]byte{byte(wire.KindHealth), 0}); err != nil {
			t.Fatal(err)
		}
		sts = append(sts, st)
	}
	return sts
}

// heldWait bounds an honest client's request while strangers hold the
// server's streams or delivery bytes: a quarter of the 20 s
// request_timeout these tests set, which a client that had to wait for a
// held stream would wait out, and generous for a loaded 2-core machine
// (a bound of 2 s was within its reach).
const heldWait = 5 * time.Second

// outcome is what became of a stream the client wrote to.
type outcome int

const (
	waiting   outcome = iota // no answer within the wait
	refused                  // an Error record, RATE_LIMITED
	reset                    // reset by the server (a source holding less took its room)
	otherwise                // anything else
)

// outcomes reads the first record of each stream, waiting at most d.
func outcomes(sts []*quic.Stream, d time.Duration) []outcome {
	out := make([]outcome, len(sts))
	var wg sync.WaitGroup
	for i, st := range sts {
		wg.Go(func() {
			st.SetReadDeadline(time.Now().Add(d))
			m, err := wire.NewReader(st, padding.Default).ReadMessage()
			var se *quic.StreamError
			e, isErr := m.(*wire.ErrorMessage)
			switch {
			case errors.As(err, &se) && se.Remote:
				out[i] = reset
			case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
				out[i] = waiting
			case err == nil && isErr && e.Code == wire.CodeRateLimited:
				out[i] = refused
			default:
				out[i] = otherwise
			}
		})
	}
	wg.Wait()
	return out
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func count(os []outcome, o outcome) int {
	n := 0
	for _, x := range os {
		if x == o {
			n++
		}
	}
	return n
}

// TestAttackStreamsPerSource: a stranger on one address opens stalled
// streams on several connections, each connection under max_streams. The
// source as a whole holds at most max_streams_per_addr of them: the rest
// are refused with RATE_LIMITED at once, and a client on another address
// is served meanwhile.
func TestAttackStreamsPerSource(t *testing.T) {
	const perAddr = 8
	m := metrics.New("test")
	ts := startServer(t, withMetrics(m, func(o *server.Options) {
		o.MaxStreamsPerAddr = perAddr
		o.RequestTimeout = 20 * time.Second // the stalled streams are not cut off during the test
	}))
	base := serveAdmin(t, ts)
	var sts []*quic.Stream
	for range 3 {
		sts = append(sts, stalled(t, rawFrom(t, ts, "127.0.0.2"), 5)...)
	}
	got := outcomes(sts, 2*time.Second)
	if n := count(got, refused); n != len(sts)-perAddr || count(got, waiting) != perAddr {
		t.Fatalf("%d stalled streams from one address: %d refused, %d held, want %d refused and %d held (outcomes %v)",
			len(sts), n, count(got, waiting), len(sts)-perAddr, perAddr, got)
	}
	other := dialFrom(t, ts, "127.0.0.3")
	start := time.Now()
	if _, err := other.Health(ctxT(t)); err != nil {
		t.Fatalf("a client on another address: %v", err)
	}
	if d := time.Since(start); d > heldWait {
		t.Errorf("a client on another address waited %v", d)
	}
	if v := value(scrape(t, base), "qpc_limit_refusals_total", "limit", metrics.LimitStreamsPerAddr); v != float64(len(sts)-perAddr) {
		t.Errorf("streams_per_addr refusals: %v, want %d", v, len(sts)-perAddr)
	}
}

// TestAttackStreamsTotalShared: strangers on several addresses hold the
// server's whole max_streams_total. The server never holds more, and it
// stays fair: a stranger on a new address and then an honest client each
// get a stream by resetting one of the source holding the most, so that
// nobody can be locked out by holding streams.
func TestAttackStreamsTotalShared(t *testing.T) {
	const perAddr, total = 8, 16
	m := metrics.New("test")
	ts := startServer(t, withMetrics(m, func(o *server.Options) {
		o.MaxStreamsPerAddr, o.MaxStreamsTotal = perAddr, total
		o.RequestTimeout = 20 * time.Second
	}))
	base := serveAdmin(t, ts)
	open := func() float64 { return value(scrape(t, base), "qpc_streams_open") }
	var first []*quic.Stream
	for _, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		first = append(first, stalled(t, rawFrom(t, ts, ip), perAddr)...)
	}
	if got := outcomes(first, time.Second); count(got, waiting) != total {
		t.Fatalf("two addresses' %d streams: %v, want all held", total, got)
	}
	// A third address takes its fair share from the first two.
	third := stalled(t, rawFrom(t, ts, "127.0.0.4"), perAddr)
	time.Sleep(500 * time.Millisecond)
	if n := open(); n > total {
		t.Fatalf("%v streams open, more than max_streams_total %d", n, total)
	}
	if got := outcomes(third, time.Second); count(got, waiting) < total/3 {
		t.Fatalf("a third address's streams: %v, want at least %d held", got, total/3)
	}
	// An honest client on a fourth address is served at once.
	honest := dialFrom(t, ts, "127.0.0.5")
	start := time.Now()
	if _, err := honest.Health(ctxT(t)); err != nil {
		t.Fatalf("an honest client while strangers hold every stream: %v", err)
	}
	if d := time.Since(start); d > heldWait {
		t.Errorf("an honest client waited %v for a stream", d)
	}
	if n := open(); n > total {
		t.Fatalf("%v streams open, more than max_streams_total %d", n, total)
	}
	if got := outcomes(first, time.Second); count(got, reset) < total/3 {
		t.Errorf("the first two addresses' streams: %v, want at least %d reset for the others", got, total/3)
	}
}

// TestAttackDeliveryShared: strangers on two addresses hold the whole
// delivery_bytes with Fetch streams they never read (each source within
// its delivery_source_bytes). An honest client's fetch on a third
// address does not wait for them: it takes its page by resetting a
// stream of the source holding the most, in well under request_timeout.
func TestAttackDeliveryShared(t *testing.T) {
	const connBytes = 1 << 20
	m := metrics.New("test")
	ts := startServer(t, withMetrics(m, func(o *server.Options) {
		o.DeliveryConnBytes, o.DeliverySourceBytes, o.DeliveryBytes = connBytes, 2*connBytes, 5*connBytes/2
		o.RequestTimeout = 20 * time.Second
	}))
	base := serveAdmin(t, ts)
	held := func() float64 { return value(scrape(t, base), "qpc_delivery_bytes_held") }
	ctx := ctxT(t)
	stranger := dialFrom(t, ts, "127.0.0.9")
	mb, err := stranger.CreateMailbox(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	env := make([]byte, stranger.Limits().MaxEnvelope)
	for range 16 { // 2 MiB: more than a source's share
		if _, err := stranger.Send(ctx, mb.SendID, protocol.NewMessageID(), env, nil); err != nil {
			t.Fatal(err)
		}
	}
	var stalledFetch []*quic.Stream
	// The strangers' flow-control windows are small, so the server cannot
	// push a page out of its budget into their receive buffers: what it
	// loads for them stays held, on a quiet machine as on a loaded one
	// (with quic-go's default windows of hundreds of KB, some pages
	// drained into the streams and freed their bytes first, and the
	// honest fetch sometimes found room without a reset).
	small := &quic.Config{
		InitialStreamReceiveWindow: 8 << 10, MaxStreamReceiveWindow: 8 << 10,
		InitialConnectionReceiveWindow: 16 << 10, MaxConnectionReceiveWindow: 16 << 10,
	}
	// Two sources, two connections each: each connection's budget holds
	// one page of four of the largest envelopes (a second does not fit),
	// so together they hold four pages, all but a sliver of
	// delivery_bytes, and an honest page fits only by taking room from
	// the source holding the most.
	for _, ip := range []string{"127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"} {
		qc := rawFromWith(t, ts, ip, small)
		cs := qc.ConnectionState().TLS
		b, err := cs.ExportKeyingMaterial(wire.ExporterLabel, nil, wire.BindingSize)
		if err != nil {
			t.Fatal(err)
		}
		for range 8 {
			req := &wire.Fetch{ReceiveID: mb.ReceiveID, Limit: wire.MaxFetchLimit}
			if err := wire.Sign(req, mb.Key, b); err != nil {
				t.Fatal(err)
			}
			rec, _ := wire.AppendMessage(nil, padding.Default, req)
			st, err := qc.OpenStreamSync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			st.Write(rec) // and never read the answer
			stalledFetch = append(stalledFetch, st)
		}
	}
	// The server loads what the budgets let it; on a loaded machine that
	// takes a while. Wait until the sources hold their four pages (more
	// than three would: an honest page no longer fits beside them) and
	// the figure has not moved for half a second.
	last, same := held(), 0
	for deadline := time.Now().Add(15 * time.Second); same < 5; {
		if time.Now().After(deadline) {
			t.Fatalf("strangers' Fetch streams never settled: delivery bytes held %v", last)
		}
		time.Sleep(100 * time.Millisecond)
		if now := held(); now == last && now > 2*connBytes {
			same++
		} else {
			last, same = now, 0
		}
	}

	alice, bob := dialFrom(t, ts, "127.0.0.4"), dialFrom(t, ts, "127.0.0.4")
	own, err := bob.CreateMailbox(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Send(ctx, own.SendID, protocol.NewMessageID(), []byte("hello"), nil); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	msgs, _, err := bob.Fetch(ctx, own, 0, 10)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("honest fetch while strangers hold delivery_bytes: %d messages, %v", len(msgs), err)
	}
	if d := time.Since(start); d > heldWait {
		t.Errorf("honest fetch took %v while strangers held delivery_bytes (request_timeout 20 s)", d)
	}
	if got := outcomes(stalledFetch, 500*time.Millisecond); count(got, reset) == 0 {
		t.Errorf("no stranger's stream was reset for the honest fetch: %v", got)
	}
}
