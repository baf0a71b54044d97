package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/stats"
	"github.com/quicprochat/qpc/wire"
)

// sendLog records, for one client, the time and size of every Send
// request it puts on the wire (the client side of what the server sees).
type sendLog struct {
	mu      sync.Mutex
	streams map[string]int // role/stream → index in sends
	sends   []sendRec
	notify  chan struct{}
}

type sendRec struct {
	role string
	at   time.Time
	size int
}

func newSendLog() *sendLog {
	return &sendLog{streams: map[string]int{}, notify: make(chan struct{}, 1000)}
}

func (l *sendLog) tap(role string, stream int64, outgoing bool, b []byte) {
	if !outgoing || stream == 0 || len(b) == 0 {
		return
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	k := fmt.Sprintf("%s/%d", role, stream)
	if i, ok := l.streams[k]; ok {
		if i >= 0 {
			l.sends[i].size += len(b)
		}
		return
	}
	if wire.Kind(b[0]) != wire.KindSend {
		l.streams[k] = -1
		return
	}
	l.streams[k] = len(l.sends)
	l.sends = append(l.sends, sendRec{role: role, at: now, size: len(b)})
	select {
	case l.notify <- struct{}{}:
	default:
	}
}

// since returns the sends from index i on.
func (l *sendLog) since(i int) []sendRec {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]sendRec(nil), l.sends[min(i, len(l.sends)):]...)
}

func (l *sendLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sends)
}

// newUserWith is newUser with adjusted options.
func newUserWith(t *testing.T, ms *messengerServer, handle string, mutate func(*client.Options)) *client.Client {
	t.Helper()
	ctx := ctxT(t)
	o := messengerOptions(t.TempDir())
	if mutate != nil {
		mutate(&o)
	}
	c, err := client.Init(ctx, ms.addr, ms.pin(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Register(ctx, handle, []byte("password of "+handle)); err != nil {
		t.Fatalf("register %s: %v", handle, err)
	}
	return c
}

// connect makes a a direct chat with b that both sides can write to.
func connect(t *testing.T, a, b *client.Client) {
	t.Helper()
	ctx := ctxT(t)
	if err := a.Send(ctx, b.Handle(), "hello"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, b); len(got) != 1 {
		t.Fatalf("%s got %q", b.Handle(), got)
	}
	texts(t, a) // a learns b's mailbox
}

func receiptEvents(t *testing.T, c *client.Client) []client.Event {
	t.Helper()
	ev, err := c.Sync(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	var out []client.Event
	for _, e := range ev {
		if e.Kind == client.EventReceipt {
			out = append(out, e)
		}
	}
	return out
}

// TestReceiptsOffAndRead: with receipts off (the default) nothing leaves
// the receiver, whatever it reads; with read receipts on, reading sends
// one receipt after the delay, and the sender's history shows it.
func TestReceiptsOffAndRead(t *testing.T) {
	ms := startMessengerServer(t)
	log := newSendLog()
	delay := &client.ReceiptDelay{Mean: 20 * time.Millisecond, Max: 200 * time.Millisecond}
	alice := newUser(t, ms, "alice")
	bob := newUserWith(t, ms, "bob", func(o *client.Options) { o.Tap = log.tap; o.ReceiptDelay = delay })
	ctx := ctxT(t)
	connect(t, alice, bob)
	if d, r, err := bob.Receipts("alice"); err != nil || d || r {
		t.Fatalf("receipts on by default: %v %v %v", d, r, err)
	}
	before := log.count()
	for i := range 20 {
		if err := alice.Send(ctx, "bob", fmt.Sprint("m", i)); err != nil {
			t.Fatal(err)
		}
	}
	if got := texts(t, bob); len(got) != 20 {
		t.Fatalf("bob got %d texts", len(got))
	}
	if err := bob.MarkRead("alice"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	texts(t, bob)
	if n := log.count() - before; n != 0 {
		t.Fatalf("receipts off, yet bob sent %d envelopes", n)
	}
	if ev := receiptEvents(t, alice); len(ev) != 0 {
		t.Fatalf("receipts off, yet alice got %v", ev)
	}
	t.Logf("receipts off: 20 texts received and read, 0 envelopes sent by the receiver")

	// Read receipts only.
	if err := bob.SetReceipts("alice", false, true); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"r1", "r2"} {
		if err := alice.Send(ctx, "bob", s); err != nil {
			t.Fatal(err)
		}
	}
	texts(t, bob)
	time.Sleep(300 * time.Millisecond)
	texts(t, bob)
	if n := log.count() - before; n != 0 {
		t.Fatalf("delivery receipts off, yet bob sent %d envelopes", n)
	}
	if err := bob.MarkRead("alice"); err != nil {
		t.Fatal(err)
	}
	texts(t, bob) // never at once: the receipt is not due yet (or just)
	time.Sleep(300 * time.Millisecond)
	texts(t, bob)
	if n := log.count() - before; n != 1 {
		t.Fatalf("bob sent %d envelopes after reading, want 1 read receipt", n)
	}
	ev := receiptEvents(t, alice)
	if len(ev) != 1 || ev[0].Status != "read" || len(ev[0].IDs) != 2 {
		t.Fatalf("alice got %+v", ev)
	}
	hist, err := alice.History("bob", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range hist {
		if e.Kind != client.EventMessage || e.From != "alice" {
			continue
		}
		want := "sent"
		if e.Text == "r1" || e.Text == "r2" {
			want = "read"
		}
		if e.Status != want {
			t.Errorf("%q: status %q, want %q", e.Text, e.Status, want)
		}
	}
}

// TestReceiptDelayMeasured: with delivery receipts on and a configured
// mean of 150 ms, the time from processing a text to the receipt leaving
// the receiver (measured on the wire) follows the configured exponential
// distribution (one-sample KS test), and every message of the sender ends
// up marked delivered.
func TestReceiptDelayMeasured(t *testing.T) {
	n := 200
	if testing.Short() {
		n = 60
	}
	if s := os.Getenv("QPC_RECEIPT_N"); s != "" {
		fmt.Sscan(s, &n)
	}
	ms := startMessengerServer(t)
	log := newSendLog()
	// The mean is short for a test but long against the few milliseconds
	// between a text's processing time (stamped inside its transaction)
	// and the end of its processing (commit, ack), before which no receipt
	// can be released: with a 50 ms mean that fixed lag alone is visible
	// to the KS test at n=200 (measured: mean 61.6 ms, D=0.13, p=0.002).
	delay := client.ReceiptDelay{Mean: 150 * time.Millisecond, Max: 3 * time.Second}
	// Hundreds of messages and receipts: the wallets refill on their
	// schedule (fast here), never because of a send; alice, who does not
	// follow, runs hers herself.
	alice := newUserWith(t, ms, "alice", func(o *client.Options) { o.RefillMean = 100 * time.Millisecond })
	bob := newUserWith(t, ms, "bob", func(o *client.Options) {
		o.Tap, o.ReceiptDelay, o.RefillMean = log.tap, &delay, 100*time.Millisecond
		// Every envelope bob sends is counted as a receipt below: his
		// scheduled leaf updates (one commit after 50 texts) would be
		// one more.
		o.UpdateAfter, o.UpdateEvery = -1, -1
	})
	connect(t, alice, bob)
	defer alice.StartRefills(context.Background())()
	if err := bob.SetReceipts("alice", true, false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	type arrival struct {
		id string
		at time.Time
	}
	processed := make(chan arrival, n+1)
	queued := make(chan arrival, n+1)
	followDone := make(chan error, 1)
	fctx, stop := context.WithCancel(ctx)
	go func() {
		followDone <- bob.Follow(fctx, func(e client.Event) {
			switch {
			case e.Kind == client.EventMessage:
				processed <- arrival{e.ID, e.At}
			case e.Kind == client.EventReceipt && e.From == "bob":
				for _, id := range e.IDs {
					queued <- arrival{id, e.At}
				}
			}
		})
	}()
	// One message at a time, so that each receipt's own timing is seen
	// (processing the next message would hold up a due receipt).
	measure := func(round int) (delays, wire []float64) {
		for i := range n {
			mark := log.count()
			if err := alice.Send(ctx, "bob", fmt.Sprint("r", round, "n", i)); err != nil {
				t.Fatal(err)
			}
			var p, q arrival
			select {
			case p = <-processed:
			case <-time.After(20 * time.Second):
				t.Fatalf("message %d never processed", i)
			}
			select {
			case q = <-queued:
			case <-time.After(20 * time.Second):
				t.Fatalf("no receipt for message %d", i)
			}
			if q.id != p.id {
				t.Fatalf("receipt for %s, want %s", q.id, p.id)
			}
			deadline := time.After(20 * time.Second)
			for log.count() == mark {
				select {
				case <-log.notify:
				case <-deadline:
					t.Fatalf("receipt for message %d never sent", i)
				}
			}
			s := log.since(mark)
			if len(s) != 1 {
				t.Fatalf("message %d: %d sends", i, len(s))
			}
			delays = append(delays, float64(q.at.Sub(p.at)))
			wire = append(wire, float64(s[0].at.Sub(p.at)))
			if wire[i] < delays[i] {
				t.Fatalf("message %d: on the wire %v before it was queued %v", i, time.Duration(wire[i]), time.Duration(delays[i]))
			}
		}
		return delays, wire
	}
	// A 1 % test rejects a correct delay in one run out of a hundred; a
	// wrong one is rejected again by a second, independent batch, chance
	// only once in ten thousand.
	rounds := 0
	for rounds < 2 {
		rounds++
		delays, wire := measure(rounds)
		Dw, pw := stats.KSOneSample(wire, func(x float64) float64 { return delay.CDF(time.Duration(x)) })
		t.Logf("batch %d: processed → on the wire: mean %.1f ms, min %.2f ms (includes encrypting, token, sealing, sending); KS: D=%.4f p=%.3g", rounds, mean(wire)/1e6, slices.Min(wire)/1e6, Dw, pw)
		D, p := stats.KSOneSample(delays, func(x float64) float64 { return delay.CDF(time.Duration(x)) })
		t.Logf("batch %d: processed → receipt released into the outbox: n=%d mean %.1f ms (configured %v), min %.2f ms; KS against Exp(mean %v): D=%.4f p=%.3f",
			rounds, n, mean(delays)/1e6, delay.Mean, slices.Min(delays)/1e6, delay.Mean, D, p)
		if p > 0.01 || raceDetector {
			break
		}
		if rounds == 2 {
			t.Errorf("measured receipt delays do not follow the configured distribution in two independent batches: D=%.4f p=%.3g", D, p)
		}
	}
	stop()
	if err := <-followDone; err != nil {
		t.Fatal(err)
	}
	n *= rounds
	// The sender sees every message delivered.
	got := 0
	for _, e := range receiptEvents(t, alice) {
		got += len(e.IDs)
	}
	hist, err := alice.History("bob", 0)
	if err != nil {
		t.Fatal(err)
	}
	delivered := 0
	for _, e := range hist {
		if e.From == "alice" && e.Status == "delivered" {
			delivered++
		}
	}
	if got != n || delivered != n {
		t.Fatalf("alice got receipts for %d messages, %d marked delivered; want %d", got, delivered, n)
	}
}

func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}
