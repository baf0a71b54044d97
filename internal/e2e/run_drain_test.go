package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/wire"
)

// pendingSend is a send whose ack the client never saw.
type pendingSend struct {
	to  wire.ID
	id  wire.MessageID
	env []byte
}

// TestDrainUnderLoad: 200 clients send continuously to a server started
// as qpc-server run starts one (startRun); its context ends mid-stream, as
// on SIGTERM. It must turn unready, drain and return nil. After a restart
// on the same port every client retries what was not acknowledged (same
// message IDs). Then the store must hold every acknowledged send exactly
// once, and every send must have been acknowledged by one of the two runs:
// none lost, none doubled.
func TestDrainUnderLoad(t *testing.T) {
	const (
		mailboxes = 20
		sendFor   = 1500 * time.Millisecond // before the signal
	)
	clients := 200
	if raceDetector {
		// The race detector allows 8,128 live goroutines in the whole
		// process, which holds both sides here (the binary's test ran
		// the server in a process of its own, outside the race run).
		clients = 40
	}
	dir := filepath.Join(t.TempDir(), "data")
	args := func(listen string) []string {
		return []string{"--data-dir", dir, "--listen", listen, "--require-tokens=false",
			"--admin-listen", "127.0.0.1:0", "--max-conns-per-addr", "1000",
			// Every client is on 127.0.0.1: one source.
			"--max-streams-per-addr", "100000", "--max-streams-total", "100000",
			"--request-rate", "100000", "--request-burst", "100000", "--shutdown-timeout", "15s"}
	}
	r := startRun(t, args("127.0.0.1:0")...)
	addr, admin := r.addr, r.admin
	if code := readyz(t, admin); code != http.StatusOK {
		t.Fatalf("/readyz before the drain: %d", code)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	copts := protocol.Options{
		MaxAttempts: 3, BaseBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		RequestTimeout: 5 * time.Second, HandshakeTimeout: 5 * time.Second,
	}
	owner, err := protocol.Dial(ctx, addr, copts)
	if err != nil {
		t.Fatal(err)
	}
	var boxes []*protocol.Mailbox
	for range mailboxes {
		mb, err := owner.CreateMailbox(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		boxes = append(boxes, mb)
	}
	owner.Close()

	conns := make([]*protocol.Conn, clients)
	var wg sync.WaitGroup
	var dialErr atomic.Value
	for i := range conns {
		wg.Go(func() {
			c, err := dialRetry(ctx, addr, copts)
			if err != nil {
				dialErr.Store(err)
				return
			}
			conns[i] = c
		})
	}
	wg.Wait()
	if err, _ := dialErr.Load().(error); err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()

	var (
		mu      sync.Mutex
		acked   = map[wire.MessageID]wire.ID{}
		pending = make([][]pendingSend, clients)
		codes   = map[string]int{}
	)
	for i, c := range conns {
		wg.Go(func() {
			for n := 0; ; n++ {
				ps := pendingSend{to: boxes[(i+n)%mailboxes].SendID, id: protocol.NewMessageID(), env: []byte(fmt.Sprintf("client %d message %d", i, n))}
				_, err := c.Send(ctx, ps.to, ps.id, ps.env, nil)
				mu.Lock()
				if err == nil {
					acked[ps.id] = ps.to
					mu.Unlock()
					continue
				}
				// Not acknowledged: the client keeps it to retry after
				// the restart; it stops sending to a server that left.
				pending[i] = append(pending[i], ps)
				code, ok := wire.CodeOf(err)
				switch {
				case ok:
					codes[code.String()]++
				case errors.Is(err, protocol.ErrClosed):
					codes["closed"]++
				default:
					codes["transport"]++
				}
				mu.Unlock()
				if ok && !code.Retryable() {
					t.Errorf("client %d: a drain answered %v, which a client may not retry", i, err)
				}
				return
			}
		})
	}
	// At least sendFor of load, and at least one ack per client on
	// average before the signal: a loaded machine may take longer to
	// get there than sendFor (the check after the drain says so if it
	// never does).
	time.Sleep(sendFor)
	ackedNow := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	for deadline := time.Now().Add(30 * time.Second); ackedNow() < clients && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	before := ackedNow()
	r.signal()
	// The admin listener says unready from the start of the drain (or is
	// gone, once the drain has finished).
	for deadline := time.Now().Add(10 * time.Second); ; {
		code := readyz(t, admin)
		if code == http.StatusServiceUnavailable || code == -1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz after the signal: %d, want 503", code)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := r.wait(); err != nil {
		t.Fatalf("Run after the drain: %v\nlog:\n%s", err, r.logs.String())
	}
	wg.Wait()
	if before < clients {
		t.Fatalf("only %d sends acknowledged before the signal: the load never ran", before)
	}
	phase1 := len(acked)
	unacked := 0
	for _, ps := range pending {
		unacked += len(ps)
	}
	t.Logf("before the signal %d acked; by exit %d acked, %d unacknowledged (%v)", before, phase1, unacked, codes)
	if unacked != clients {
		t.Fatalf("%d unacknowledged sends, want one per client (each stops at its first error)", unacked)
	}

	// Restart on the same port; every client retries what it holds.
	_, port, _ := net.SplitHostPort(regexp.MustCompile(`@([^/]+)$`).FindStringSubmatch(addr)[1])
	r2 := restartOn(t, args("127.0.0.1:"+port)...)
	retry := protocol.Options{MaxAttempts: 20, BaseBackoff: 20 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, RequestTimeout: 10 * time.Second}
	var retried, dups atomic.Int64
	for i := range conns {
		wg.Go(func() {
			c, err := dialRetry(ctx, addr, retry)
			if err != nil {
				t.Errorf("client %d redial: %v", i, err)
				return
			}
			defer c.Close()
			for _, ps := range pending[i] {
				dup, err := c.Send(ctx, ps.to, ps.id, ps.env, nil)
				if err != nil {
					t.Errorf("client %d retry: %v", i, err)
					return
				}
				retried.Add(1)
				if dup {
					dups.Add(1) // committed before the drain cut the ack
				}
				mu.Lock()
				acked[ps.id] = ps.to
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := r2.stop(); err != nil {
		t.Fatalf("second run: %v", err)
	}
	t.Logf("retried %d after the restart, %d of them already stored", retried.Load(), dups.Load())

	// Every acknowledged send is in the store, once; nothing else is.
	st, err := store.Open(filepath.Join(dir, "qpc.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	stored := map[wire.MessageID]int{}
	for _, mb := range boxes {
		after := uint64(0)
		for {
			msgs, more, err := st.Fetch(ctx, mb.ReceiveID, after, 1000, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range msgs {
				stored[m.ID]++
				if acked[m.ID] != mb.SendID {
					t.Errorf("stored message was never acknowledged, or is in the wrong mailbox")
				}
				after = m.Seq
			}
			if !more {
				break
			}
		}
	}
	lost, doubled := 0, 0
	for id := range acked {
		switch stored[id] {
		case 0:
			lost++
		case 1:
		default:
			doubled++
		}
	}
	if lost != 0 || doubled != 0 || len(stored) != len(acked) {
		t.Fatalf("%d acknowledged sends; store holds %d distinct: %d lost, %d stored twice", len(acked), len(stored), lost, doubled)
	}
	t.Logf("%d sends from %d clients: every one acknowledged and stored exactly once", len(acked), clients)
}

// restartOn starts a server as startRun does, on the port the test's
// first run just released. Another process's ephemeral UDP socket may take
// that port in between (CI runs many tests at once); Run then says
// "address already in use", and restartOn tries again for up to 30 s,
// until the other socket has gone. Any other error fails the test.
func restartOn(t *testing.T, args ...string) *runServer {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for attempt := 1; ; attempt++ {
		r, err := tryRun(t, args...)
		if err == nil {
			if attempt > 1 {
				t.Logf("restart: port free again at attempt %d", attempt)
			}
			return r
		}
		if !strings.Contains(err.Error(), "address already in use") || time.Now().After(deadline) {
			t.Fatalf("server.Run (restart, attempt %d): %v\nlog:\n%s", attempt, err, r.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dialRetry dials like a real client facing a crowd: quic-go refuses a
// new connection (CONNECTION_REFUSED) while 32 others are still in their
// handshake, which 200 clients dialling at once on two loaded cores
// reach; the client backs off and tries again.
func dialRetry(ctx context.Context, addr string, opts protocol.Options) (*protocol.Conn, error) {
	var err error
	for attempt := 1; attempt <= 20; attempt++ {
		var c *protocol.Conn
		if c, err = protocol.Dial(ctx, addr, opts); err == nil {
			return c, nil
		}
		time.Sleep(time.Duration(min(attempt, 10)*25+rand.IntN(50)) * time.Millisecond)
	}
	return nil, err
}

// readyz returns the status of /readyz, or -1 if the listener is gone.
func readyz(t *testing.T, admin string) int {
	t.Helper()
	hc := &http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get("http://" + admin + "/readyz")
	if err != nil {
		return -1
	}
	resp.Body.Close()
	return resp.StatusCode
}
