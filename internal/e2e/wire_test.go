package e2e

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/wire"
)

// streamLog collects the raw bytes of every request stream, per direction.
type streamLog struct {
	mu      sync.Mutex
	streams map[int64]*[2][]byte
}

func (l *streamLog) tap(id int64, outgoing bool, b []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.streams == nil {
		l.streams = make(map[int64]*[2][]byte)
	}
	if l.streams[id] == nil {
		l.streams[id] = new([2][]byte)
	}
	dir := 0
	if !outgoing {
		dir = 1
	}
	l.streams[id][dir] = append(l.streams[id][dir], b...)
}

// TestEveryRecordIsBucketSized drives every request kind and checks the
// raw bytes that crossed each stream, in both directions: they must cut
// into records whose every size is a bucket of the announced policy (the
// control bucket for the hello stream), with nothing left over. The split
// uses only the header's length field, so it checks the bytes, not the
// encoder.
func TestEveryRecordIsBucketSized(t *testing.T) {
	ts := startServer(t, nil)
	ctx := ctxT(t)
	var log streamLog
	c := dial(t, ts, protocol.Options{Tap: log.tap})
	mb, err := c.CreateMailbox(ctx, []byte("auth-blob"))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := c.Subscribe(ctx, mb, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Envelopes of many sizes, so records land in every bucket.
	var ids []wire.MessageID
	for _, n := range []int{0, 1, 400, 460, 2000, 2047, 5000, 16000, 17000, 100000, int(c.Limits().MaxEnvelope)} {
		id := protocol.NewMessageID()
		ids = append(ids, id)
		if _, err := c.Send(ctx, mb.SendID, id, make([]byte, n), nil); err != nil {
			t.Fatalf("send %d bytes: %v", n, err)
		}
	}
	for range ids {
		select {
		case <-sub.C:
		case <-time.After(10 * time.Second):
			t.Fatal("push did not arrive")
		}
	}
	sub.Close()
	if _, _, err := c.Fetch(ctx, mb, 0, 100); err != nil {
		t.Fatal(err)
	}
	c.Ack(ctx, mb, ids)
	c.Health(ctx)
	// An error response is a record too.
	c.Send(ctx, wire.ID{1}, protocol.NewMessageID(), []byte("x"), nil)
	c.DeleteMailbox(ctx, mb)

	policy := c.Policy()
	log.mu.Lock()
	defer log.mu.Unlock()
	sizes := map[int]int{}
	for id, dirs := range log.streams {
		p := policy
		if id == 0 {
			p = padding.Control // the hello stream
		}
		for dir, b := range dirs {
			for len(b) > 0 {
				if len(b) < wire.HeaderSize {
					t.Fatalf("stream %d dir %d: %d stray bytes", id, dir, len(b))
				}
				n := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
				size, err := p.Bucket(wire.HeaderSize + n)
				if err != nil || size > len(b) {
					t.Fatalf("stream %d dir %d: record of body %d does not fit a bucket in the %d bytes left", id, dir, n, len(b))
				}
				if !p.IsBucket(size) {
					t.Fatalf("record of %d bytes is not a bucket size", size)
				}
				sizes[size]++
				b = b[size:]
			}
		}
	}
	for _, bucket := range policy.Buckets() {
		if sizes[bucket] == 0 {
			t.Errorf("no record of bucket %d was seen; the test does not cover it", bucket)
		}
	}
	if len(sizes) == 0 {
		t.Fatal("no record observed")
	}
	t.Logf("records by bucket: %v", sizes)
}

// rawConn opens a QUIC connection that speaks whatever bytes a test gives
// it, to play a broken or hostile client.
func rawConn(t *testing.T, ts *testServer) *quic.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	qc, err := quic.DialAddr(ctx, ts.host, &tls.Config{
		InsecureSkipVerify: true, NextProtos: []string{wire.ALPN}, MinVersion: tls.VersionTLS13,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	return qc
}

// rawHelloConn is rawConn after a successful version hello.
func rawHelloConn(t *testing.T, ts *testServer) *quic.Conn {
	t.Helper()
	qc := rawConn(t, ts)
	hello, _ := wire.AppendMessage(nil, padding.Control, &wire.ClientHello{Versions: []uint16{1}})
	m, err := rawRoundTrip(t, qc, padding.Control, hello)
	if err != nil {
		t.Fatalf("raw hello: %v", err)
	}
	if _, ok := m.(*wire.ServerHello); !ok {
		t.Fatalf("raw hello got %T", m)
	}
	return qc
}

// rawSubscribe subscribes to mb on a raw connection, signing over its
// exporter, and returns the stream and its reader; the test decides
// whether to read.
func rawSubscribe(t *testing.T, ts *testServer, mb *protocol.Mailbox) (*quic.Stream, *wire.Reader) {
	t.Helper()
	qc := rawHelloConn(t, ts)
	cs := qc.ConnectionState().TLS
	binding, err := cs.ExportKeyingMaterial(wire.ExporterLabel, nil, wire.BindingSize)
	if err != nil {
		t.Fatal(err)
	}
	req := &wire.Subscribe{ReceiveID: mb.ReceiveID}
	if err := wire.Sign(req, mb.Key, binding); err != nil {
		t.Fatal(err)
	}
	rec, _ := wire.AppendMessage(nil, padding.Default, req)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := qc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Write(rec)
	return st, wire.NewReader(st, padding.Default)
}

func rawRoundTrip(t *testing.T, qc *quic.Conn, p padding.Policy, raw []byte) (wire.Message, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := qc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.SetDeadline(time.Now().Add(5 * time.Second))
	st.Write(raw)
	st.Close()
	return wire.NewReader(st, p).ReadMessage()
}

// TestMalformedRecordsFlood: one connection floods the server with broken
// records of every kind; each gets an Error record with the right code,
// and a well-behaved client on another connection keeps working
// throughout.
func TestMalformedRecordsFlood(t *testing.T) {
	ts := startServer(t, nil)
	ctx := ctxT(t)
	good := dial(t, ts, protocol.Options{})
	mb, err := good.CreateMailbox(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	bad := rawConn(t, ts)
	hello, _ := wire.AppendMessage(nil, padding.Control, &wire.ClientHello{Versions: []uint16{1}})
	if m, err := rawRoundTrip(t, bad, padding.Control, hello); err != nil {
		t.Fatalf("raw hello: %v", err)
	} else if _, ok := m.(*wire.ServerHello); !ok {
		t.Fatalf("raw hello got %T", m)
	}
	p := padding.Default
	fetchEnd, _ := wire.AppendMessage(nil, p, &wire.FetchEnd{})
	cases := []struct {
		name string
		raw  []byte
		code wire.Code
	}{
		{"unknown kind", mustHex("99000000" + strings.Repeat("00", 508)), wire.CodeUnknownKind},
		{"response kind sent as request", fetchEnd, wire.CodeUnknownKind},
		{"length beyond the largest bucket", mustHex("11ffffff" + strings.Repeat("00", 508)), wire.CodeTooLarge},
		{"nonzero padding", mustHex("16000000" + strings.Repeat("00", 507) + "01"), wire.CodeProtocol},
		{"body too short", mustHex("11000005" + "0102030405" + strings.Repeat("00", 503)), wire.CodeProtocol},
		{"truncated record", mustHex("160000"), wire.CodeProtocol},
		{"second hello", hello, wire.CodeUnknownKind},
	}
	var wg sync.WaitGroup
	wg.Add(1)
	stop := make(chan struct{})
	goodErrs := make(chan error, 1000)
	go func() { // the well-behaved client, all through the flood
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := good.Send(ctx, mb.SendID, protocol.NewMessageID(), envelope(i), nil); err != nil {
				goodErrs <- err
			}
		}
	}()
	for round := range 20 {
		for _, tc := range cases {
			m, err := rawRoundTrip(t, bad, p, tc.raw)
			if err != nil {
				t.Fatalf("round %d %s: no error record: %v", round, tc.name, err)
			}
			e, ok := m.(*wire.ErrorMessage)
			if !ok || e.Code != tc.code {
				t.Fatalf("round %d %s: got %T %v, want code %v", round, tc.name, m, m, tc.code)
			}
		}
	}
	close(stop)
	wg.Wait()
	close(goodErrs)
	for err := range goodErrs {
		t.Errorf("well-behaved client failed during the flood: %v", err)
	}
	msgs, _, err := good.Fetch(ctx, mb, 0, 1000)
	if err != nil || len(msgs) == 0 {
		t.Fatalf("well-behaved client: %d msgs, %v", len(msgs), err)
	}
}

// TestAttackImpersonateServer: a client refuses a server whose key is not
// the pinned one (a server impersonated by whoever holds another key).
func TestAttackImpersonateServer(t *testing.T) {
	ts := startServer(t, nil)
	a, _ := wire.ParseAddress(ts.addr)
	a.Pin[0] ^= 1
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := protocol.Dial(ctx, a.String(), protocol.Options{}); err == nil || !strings.Contains(err.Error(), "pinned") {
		t.Fatalf("dial with a wrong pin: %v, want a pin error", err)
	}
}

// TestLogsCarryNoIdentifiers runs a full session and scans the server's
// default-level log for every identifier that passed through it.
func TestLogsCarryNoIdentifiers(t *testing.T) {
	ts := startServer(t, func(o *server.Options) { o.Logger = o.Logger.With("test", "privacy") })
	ctx := ctxT(t)
	c := dial(t, ts, protocol.Options{})
	mb, err := c.CreateMailbox(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var secrets []string
	add := func(b []byte) {
		secrets = append(secrets, hex.EncodeToString(b), base64URL(b), base64Std(b))
	}
	add(mb.ReceiveID[:])
	add(mb.SendID[:])
	add(mb.Key.Public().(ed25519PublicKey))
	sub, _ := c.Subscribe(ctx, mb, 0)
	for i := range 5 {
		id := protocol.NewMessageID()
		add(id[:])
		if _, err := c.Send(ctx, mb.SendID, id, envelope(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	c.Fetch(ctx, mb, 0, 10)
	c.Send(ctx, wire.ID{9}, protocol.NewMessageID(), []byte("x"), nil) // a refusal
	sub.Close()
	c.DeleteMailbox(ctx, mb)
	raw := rawConn(t, ts)
	rawRoundTrip(t, raw, padding.Control, mustHex("99"))
	// The client's own address and port.
	for _, a := range []net.Addr{c.LocalAddr(), raw.LocalAddr()} {
		_, port, _ := net.SplitHostPort(a.String())
		secrets = append(secrets, a.String(), ":"+port)
	}
	c.Close()
	stopAndScanLog(t, ts, secrets)
}

// TestStreamSlotsReturned: a client that sends its FIN in a later packet
// than its request must get its stream slots back. With MaxStreams 10, a
// server that stopped reading after the request record would stall this
// client at the eleventh request.
func TestStreamSlotsReturned(t *testing.T) {
	ts := startServer(t, func(o *server.Options) { o.MaxStreams = 10 })
	qc := rawHelloConn(t, ts)
	health, _ := wire.AppendMessage(nil, padding.Default, &wire.Health{})
	for i := range 40 {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		st, err := qc.OpenStreamSync(ctx)
		cancel()
		if err != nil {
			t.Fatalf("request %d: no stream slot: %v", i, err)
		}
		st.SetDeadline(time.Now().Add(3 * time.Second))
		st.Write(health)
		time.Sleep(5 * time.Millisecond) // the FIN travels on its own
		st.Close()
		m, err := wire.NewReader(st, padding.Default).ReadMessage()
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if _, ok := m.(*wire.HealthStatus); !ok {
			t.Fatalf("request %d: got %T", i, m)
		}
	}
}
