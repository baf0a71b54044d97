package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"runtime/trace"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/client/content"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/internal/bench"
	"github.com/quicprochat/qpc/mls"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/sealed"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/wire"
)

// Messenger benchmarks: what the SDK (client.Client) costs on top of the
// raw delivery path (protocol.Conn), measured in the same run so that the
// ratios hold even when other work shares the machine.
//
//   - TestMessengerDMLatency: alice.Send start → bob's Follow callback sees
//     the message, against a raw Conn.Send of a record of the same size to a
//     subscribed mailbox on the same server, interleaved message by message.
//   - TestMessengerGroupSendCost: one Send from a group's creator to 2, 16
//     and 128 members until the outbox is empty, with the MLS encryption
//     and the sealing measured apart.
//
// Both run small and assert only the plumbing by default; QPC_BENCH=1 runs
// the full sizes and logs the numbers (go test -run 'Messenger(DMLatency|
// GroupSendCost)' -v ./internal/e2e).
//
// Measurement knobs of TestMessengerDMLatency (never set in CI):
// QPC_DM_TRACE=file writes a Go execution trace of the measured rounds
// (go tool trace); QPC_DM_TMPFS_alice=dir (or _bob) puts that client's
// state in a fresh directory under dir, e.g. /dev/shm, to take its fsyncs
// out of the measurement (a measurement, not a configuration to use).

func benchEnabled() bool { return os.Getenv("QPC_BENCH") == "1" }

// newUserErr is newUser for goroutines: it returns the error instead of
// failing the test, and takes its own context and options.
func newUserErr(ctx context.Context, t *testing.T, ms *messengerServer, handle string, mutate func(*client.Options)) (*client.Client, error) {
	home := t.TempDir()
	if d := os.Getenv("QPC_DM_TMPFS_" + handle); d != "" {
		var err error
		if home, err = os.MkdirTemp(d, handle); err != nil {
			return nil, err
		}
		t.Cleanup(func() { os.RemoveAll(home) })
	}
	opts := messengerOptions(home)
	if mutate != nil {
		mutate(&opts)
	}
	c, err := client.Init(ctx, ms.addr, ms.pin(), opts)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Register(ctx, handle, []byte("password of "+handle)); err != nil {
		return nil, fmt.Errorf("register %s: %w", handle, err)
	}
	return c, nil
}

// maxWrite records the largest record a connection wrote: each request
// record is one Write on its stream (protocol.Options.Tap).
type maxWrite struct{ n atomic.Int64 }

func (m *maxWrite) tap(_ int64, outgoing bool, b []byte) {
	if !outgoing {
		return
	}
	for {
		cur := m.n.Load()
		if int64(len(b)) <= cur || m.n.CompareAndSwap(cur, int64(len(b))) {
			return
		}
	}
}

// rawPath is the baseline: a sender Conn and a receiver Conn with a
// subscription, on the same server as the messenger, paying tokens of an
// account of its own with Conn.SendPaid (a token per wire.SendsPerToken
// Sends), as qpc-bench does.
type rawPath struct {
	send, recv *protocol.Conn
	mb         *protocol.Mailbox
	sub        *protocol.Subscription
	toks       [][]byte
	envLen     int
	wrote      maxWrite
	arrivals   chan rawArrival
}

type rawArrival struct {
	idx uint32
	at  time.Time
}

// envelopeFor is the envelope length that makes a Send record with a
// token of authLen bytes exactly recordSize bytes: the record header, the
// send ID, the message ID, the auth length (u16) and the envelope length
// (u24) around them.
func envelopeFor(recordSize, authLen int) int {
	return recordSize - wire.HeaderSize - (wire.IDSize + wire.MessageIDSize + 2 + authLen + 3)
}

func newRawPath(t *testing.T, ms *messengerServer, name string, sends, recordSize int) *rawPath {
	t.Helper()
	p := &rawPath{arrivals: make(chan rawArrival, 4096)}
	acct := dial(t, ms.testServer, protocol.Options{})
	sess := registered(t, acct, name)
	for len(p.toks) < sends+1 {
		p.toks = append(p.toks, wallet(t, acct, sess, min(tokens.MaxBatch, sends+1-len(p.toks)))...)
	}
	p.send = dial(t, ms.testServer, protocol.Options{Tap: p.wrote.tap})
	p.recv = dial(t, ms.testServer, protocol.Options{})
	ctx := ctxT(t)
	var err error
	if p.mb, err = p.recv.CreateMailbox(ctx, p.take()); err != nil {
		t.Fatal(err)
	}
	if p.sub, err = p.recv.Subscribe(ctx, p.mb, 0); err != nil {
		t.Fatal(err)
	}
	p.envLen = envelopeFor(recordSize, len(p.toks[0]))
	// The receiver notes the arrival, then acks before it reports, so the
	// ack is never inside a measured interval.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range p.sub.C {
			at := time.Now()
			p.recv.Ack(context.Background(), p.mb, []wire.MessageID{m.ID})
			p.arrivals <- rawArrival{binary.BigEndian.Uint32(m.Envelope), at}
		}
	}()
	t.Cleanup(func() { p.sub.Close(); <-done })
	return p
}

func (p *rawPath) take() []byte {
	tok := p.toks[0]
	p.toks = p.toks[1:]
	return tok
}

// one sends message idx and waits for its delivery: the Send call's
// duration and the latency from its start to the arrival.
func (p *rawPath) one(ctx context.Context, idx uint32) (send, lat time.Duration, err error) {
	env := make([]byte, p.envLen)
	rand.Read(env)
	binary.BigEndian.PutUint32(env, idx)
	// Paid as qpc-bench and the messenger pay: a token per
	// wire.SendsPerToken Sends on the connection (Conn.SendPaid).
	start := time.Now()
	_, spent, err := p.send.SendPaid(ctx, p.mb.SendID, protocol.NewMessageID(), env, p.toks[0])
	if spent {
		p.take()
	}
	if err != nil {
		return 0, 0, err
	}
	send = time.Since(start)
	select {
	case a := <-p.arrivals:
		if a.idx != idx {
			return 0, 0, fmt.Errorf("raw: got message %d, want %d", a.idx, idx)
		}
		return send, a.at.Sub(start), nil
	case <-time.After(20 * time.Second):
		return 0, 0, fmt.Errorf("raw: message %d never arrived", idx)
	}
}

// dist summarizes durations in milliseconds.
type dist []time.Duration

func (d dist) pct(p float64) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	return bench.LatencyPercentile(s, p)
}

func (d dist) mean() float64 {
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	if len(d) == 0 {
		return 0
	}
	return float64(sum) / float64(len(d)) / float64(time.Millisecond)
}

// parts collects the durations client.Options.Timing reports, by part.
type parts struct {
	mu sync.Mutex
	on bool
	d  map[string]dist
}

func (p *parts) record(part string, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.on {
		p.d[part] = append(p.d[part], d)
	}
}

func (p *parts) start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.on, p.d = true, map[string]dist{}
}

// dmRounds is how many rounds of how many messages each
// TestMessengerDMLatency measures: QPC_BENCH=1 takes the medians of 5
// rounds' p50 and p99.
func dmRounds() (rounds, n, warm int) {
	if benchEnabled() {
		return 5, 100, 20
	}
	return 1, 10, 3
}

func TestMessengerDMLatency(t *testing.T) {
	rounds, n, warm := dmRounds()
	ms := startMessengerServer(t)
	var aliceWrote maxWrite
	var aliceParts, bobParts parts
	var tl timeline
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	alice, err := newUserErr(ctx, t, ms, "alice", func(o *client.Options) {
		o.Dial.Tap = aliceWrote.tap
		o.Timing = func(part string, d time.Duration) {
			aliceParts.record(part, d)
			tl.alice(part, d)
		}
		// Alice sends hundreds of messages without following: her
		// wallet refills on a schedule of its own, as a long-lived
		// client's does (StartRefills), often enough to never run dry.
		o.RefillMean = 20 * time.Millisecond
	})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.StartRefills(ctx)()
	// bobDone is told when bob has acknowledged a delivery and run his
	// outbox after it (the end of Follow's work on it).
	bobDone := make(chan struct{}, 4096)
	bob, err := newUserErr(ctx, t, ms, "bob", func(o *client.Options) {
		o.Timing = func(part string, d time.Duration) {
			bobParts.record(part, d)
			tl.bob(part, d)
			if part == client.TimeRecvFlush {
				bobDone <- struct{}{}
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.AddContact(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.AddContact(ctx, "alice"); err != nil {
		t.Fatal(err)
	}

	// Bob follows; every message text carries its number.
	type arrival struct {
		seq int
		at  time.Time
	}
	got := make(chan arrival, 4096)
	fctx, fcancel := context.WithCancel(ctx)
	followed := make(chan error, 1)
	go func() {
		followed <- bob.Follow(fctx, func(e client.Event) {
			at := time.Now()
			switch e.Kind {
			case client.EventAlarm:
				t.Errorf("bob: alarm %v", e.Alarm)
			case client.EventMessage:
				var seq int
				if _, err := fmt.Sscanf(e.Text, "m %d", &seq); err != nil || e.From != "alice" {
					t.Errorf("bob: unexpected message %q from %s", e.Text, e.From)
					return
				}
				got <- arrival{seq, at}
			}
		})
	}()
	defer func() {
		fcancel()
		if err := <-followed; err != nil {
			t.Errorf("follow: %v", err)
		}
	}()

	seq := 0
	e2e := func() (send, lat time.Duration) {
		t.Helper()
		text := fmt.Sprintf("m %d", seq)
		start := time.Now()
		cur := tl.begin(start)
		defer func() { cur.shown = start.Add(lat) }()
		if err := alice.Send(ctx, "bob", text); err != nil {
			t.Fatalf("send %q: %v", text, err)
		}
		send = time.Since(start)
		select {
		case a := <-got:
			if a.seq != seq {
				t.Fatalf("bob got message %d, want %d", a.seq, seq)
			}
			lat = a.at.Sub(start)
		case <-time.After(30 * time.Second):
			t.Fatalf("bob never got message %d", seq)
		}
		// Bob acks after his callback: the next message starts once he
		// has, as the raw receiver acks before it reports an arrival, so
		// that no ack overlaps a measured message in either path.
		select {
		case <-bobDone:
		case <-time.After(30 * time.Second):
			t.Fatalf("bob never acked message %d", seq)
		}
		seq++
		return send, lat
	}

	// The first message starts the conversation (its Welcome and the text
	// go to bob's intro mailbox); once alice has read bob's announcement,
	// the rest go to his conversation mailbox.
	e2e()
	if got := texts(t, alice); len(got) != 0 {
		t.Fatalf("alice got %q", got)
	}
	// Alice follows too, as a chat client does: bob commits an update
	// of his leaf every 50 texts he receives (client/update.go), and a
	// sender that never read them would fall epochs behind.
	actx, acancel := context.WithCancel(ctx)
	afollowed := make(chan error, 1)
	go func() {
		afollowed <- alice.Follow(actx, func(e client.Event) {
			switch e.Kind {
			case client.EventAlarm:
				t.Errorf("alice: alarm %v", e.Alarm)
			case client.EventMessage:
				t.Errorf("alice: unexpected message %q from %s", e.Text, e.From)
			}
		})
	}()
	defer func() {
		acancel()
		if err := <-afollowed; err != nil {
			t.Errorf("alice follow: %v", err)
		}
	}()
	for range warm {
		e2e()
	}
	aliceWrote.n.Store(0)
	e2e()
	record := int(aliceWrote.n.Load())
	if !padding.Default.IsBucket(record) {
		t.Fatalf("alice's largest record is %d bytes, not a bucket", record)
	}

	raw := newRawPath(t, ms, "rawbench", rounds*n+warm, record)
	for i := range warm {
		if _, _, err := raw.one(ctx, uint32(i)); err != nil {
			t.Fatal(err)
		}
	}
	if w := int(raw.wrote.n.Load()); w != record {
		t.Fatalf("raw Send records are %d bytes, the messenger's %d", w, record)
	}

	// Interleaved, alternating which goes first, so that load from
	// elsewhere on the machine hits both alike.
	type round struct{ e2eLat, e2eSend, rawLat, rawSend dist }
	var rs []round
	aliceParts.start()
	bobParts.start()
	tl.start()
	if f := os.Getenv("QPC_DM_TRACE"); f != "" {
		// A Go execution trace of the measured rounds (go tool trace).
		out, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := trace.Start(out); err != nil {
			t.Fatal(err)
		}
		defer func() { trace.Stop(); out.Close() }()
	}
	next := warm
	// Alice's refills wait for a quiet moment on her anonymous
	// connections (linking.go), which back-to-back sends may not leave:
	// every 40 messages the test waits (between two measured messages)
	// until her schedule has topped the wallet up.
	refilled := func() {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			st, err := alice.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.Tokens >= protocol.DefaultWalletLow {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("alice's wallet holds %d tokens after 30 s of refills", st.Tokens)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for range rounds {
		var r round
		rawOne := func() {
			s, l, err := raw.one(ctx, uint32(next))
			if err != nil {
				t.Fatal(err)
			}
			next++
			r.rawSend, r.rawLat = append(r.rawSend, s), append(r.rawLat, l)
			tl.raw(s, l)
		}
		for i := range n {
			if i%40 == 0 {
				refilled()
			}
			if i%2 == 1 {
				rawOne()
			}
			s, l := e2e()
			r.e2eSend, r.e2eLat = append(r.e2eSend, s), append(r.e2eLat, l)
			if i%2 == 0 {
				rawOne()
			}
		}
		rs = append(rs, r)
	}

	// Nothing twice, nothing left behind.
	time.Sleep(300 * time.Millisecond)
	select {
	case a := <-got:
		t.Fatalf("bob got message %d again", a.seq)
	default:
	}
	if p, err := alice.Pending(); err != nil || p != 0 {
		t.Fatalf("alice's outbox: %d, %v", p, err)
	}

	// The medians over the rounds of each round's percentile.
	med := func(f func(round) float64) float64 {
		var v []float64
		for _, r := range rs {
			v = append(v, f(r))
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	t.Logf("DM latency, %d rounds of %d sequential messages, %d-byte Send records, GOMAXPROCS=%d; medians over the rounds", rounds, n, record, runtime.GOMAXPROCS(0))
	t.Logf("  e2e (Send start → bob's Follow callback): p50 %.2f ms  p99 %.2f ms  mean %.2f ms",
		med(func(r round) float64 { return r.e2eLat.pct(50) }), med(func(r round) float64 { return r.e2eLat.pct(99) }), med(func(r round) float64 { return r.e2eLat.mean() }))
	t.Logf("  e2e alice.Send call alone:               p50 %.2f ms  p99 %.2f ms",
		med(func(r round) float64 { return r.e2eSend.pct(50) }), med(func(r round) float64 { return r.e2eSend.pct(99) }))
	t.Logf("  raw (Conn.Send start → subscription):    p50 %.2f ms  p99 %.2f ms  mean %.2f ms",
		med(func(r round) float64 { return r.rawLat.pct(50) }), med(func(r round) float64 { return r.rawLat.pct(99) }), med(func(r round) float64 { return r.rawLat.mean() }))
	t.Logf("  raw Conn.Send call alone:                p50 %.2f ms  p99 %.2f ms",
		med(func(r round) float64 { return r.rawSend.pct(50) }), med(func(r round) float64 { return r.rawSend.pct(99) }))
	for i, r := range rs {
		t.Logf("  round %d: ratio e2e/raw p50 %.2f  p99 %.2f", i+1, r.e2eLat.pct(50)/r.rawLat.pct(50), r.e2eLat.pct(99)/r.rawLat.pct(99))
	}
	t.Logf("  ratio e2e/raw (median of the rounds' ratios): p50 %.2f  p99 %.2f",
		med(func(r round) float64 { return r.e2eLat.pct(50) / r.rawLat.pct(50) }), med(func(r round) float64 { return r.e2eLat.pct(99) / r.rawLat.pct(99) }))
	tl.log(t)
	// Where the time goes: each part's p50 and mean over every measured
	// message (client.Options.Timing), in the order a message meets them.
	order := []string{client.TimeSendLock, client.TimeSendMLS, client.TimeSendPrep, client.TimeSendQueue, client.TimeSendTokens, client.TimeSendSeal, client.TimeSendWire, client.TimeSendDone, client.TimeSendFlush,
		client.TimeRecvWait, client.TimeRecvOpen, client.TimeRecvMLS, client.TimeRecvSender, client.TimeRecvGossip, client.TimeRecvCommit, client.TimeRecvAck, client.TimeRecvFlush, client.TimeRecvShown}
	t.Logf("  %-12s %8s %8s %8s %6s", "part", "p50_ms", "p99_ms", "mean_ms", "count")
	for _, part := range order {
		p := &aliceParts
		if strings.HasPrefix(part, "recv.") {
			p = &bobParts
		}
		p.mu.Lock()
		d := p.d[part]
		p.mu.Unlock()
		t.Logf("  %-12s %8.2f %8.2f %8.2f %6d", part, d.pct(50), d.pct(99), d.mean(), len(d))
	}
}

// groupSizes are the member counts (creator included) of
// TestMessengerGroupSendCost, with the sends measured per size.
//
// A size whose group cannot be created is skipped and projected instead
// (the MLS cost of the size, measured directly, plus the per-member cost
// of the largest sizes that work). Since Welcomes larger than one envelope
// go out in chunks (client/chunks.go) every size can be created; before,
// groups of 5 and more failed with TOO_LARGE.
func groupSizes() (sizes []int, sends map[int]int) {
	if benchEnabled() {
		return []int{2, 3, 4, 5, 6, 8, 16, 128}, map[int]int{2: 40, 3: 30, 4: 30, 5: 30, 6: 20, 8: 20, 16: 15, 128: 5}
	}
	return []int{2, 4}, map[int]int{2: 2, 4: 2}
}

func TestMessengerGroupSendCost(t *testing.T) {
	// 128 users from one address open hundreds of connections, and a send
	// to 127 members is 127 requests on one connection: lift the per-address,
	// per-connection and token limits so that they do not set the pace.
	ms := startMessengerServerWith(t, func(o *server.Options) {
		o.TokenQuota = 1 << 20
		o.MaxConnsPerAddr = 1 << 16
		o.MaxStreamsPerAddr, o.MaxStreamsTotal = 1<<20, 1<<20
		o.RequestRate, o.RequestBurst = 1e6, 1<<20
	})
	sizes, sends := groupSizes()

	// The per-member parts measured apart: one seal, and one raw Send.
	sealMs := sealCost(t, 200)
	raw := newRawPath(t, ms, "rawgroup", 100, 2048)
	var rawSend dist
	for i := range 100 {
		s, _, err := raw.one(ctxT(t), uint32(i))
		if err != nil {
			t.Fatal(err)
		}
		rawSend = append(rawSend, s)
	}
	t.Logf("per envelope: sealed.Seal %.3f ms; raw Conn.Send call p50 %.3f ms (%d-byte record)", sealMs, rawSend.pct(50), 2048)

	type row struct {
		n                 int
		intro, conv       dist
		allocs, bytes     float64
		mlsMs, setup      float64
		introSync, joined time.Duration
	}
	var rows []row
	var projected []int
	// The marginal cost is taken between the smallest and the largest
	// size measured.
	for _, n := range sizes {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		k := sends[n]
		prefix := fmt.Sprintf("g%d", n)
		setupStart := time.Now()
		owner, err := newUserErr(ctx, t, ms, prefix+"-owner", nil)
		if err != nil {
			t.Fatal(err)
		}
		members := make([]*client.Client, n-1)
		handles := make([]string, n-1)
		parallel(t, n-1, func(i int) error {
			handles[i] = fmt.Sprintf("%s-m%03d", prefix, i)
			c, err := newUserErr(ctx, t, ms, handles[i], nil)
			members[i] = c
			if err == nil {
				_, err = c.AddContact(ctx, prefix+"-owner") // joins the owner's group without an invitation
			}
			return err
		})
		if t.Failed() {
			t.FailNow()
		}
		if err := owner.CreateGroup(ctx, prefix, handles); err != nil {
			if code, ok := wire.CodeOf(err); ok && code == wire.CodeTooLarge {
				t.Logf("%s: the group cannot be created: %v", prefix, err)
				for _, m := range sizes {
					if m >= n {
						projected = append(projected, m)
					}
				}
				break
			}
			t.Fatal(err)
		}
		r := row{n: n, setup: time.Since(setupStart).Seconds()}

		measure := func(label string, i int) time.Duration {
			t.Helper()
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			start := time.Now()
			if err := owner.Send(ctx, "#"+prefix, fmt.Sprintf("%s %d", label, i)); err != nil {
				t.Fatalf("%s: send %d: %v", prefix, i, err)
			}
			d := time.Since(start)
			runtime.ReadMemStats(&m1)
			if p, err := owner.Pending(); err != nil || p != 0 {
				t.Fatalf("%s: %d envelopes still in the outbox after Send (%v)", prefix, p, err)
			}
			if label == "conv" {
				r.allocs += float64(m1.Mallocs-m0.Mallocs) / float64(k)
				r.bytes += float64(m1.TotalAlloc-m0.TotalAlloc) / float64(k)
			}
			return d
		}
		// Before anyone joined: every envelope follows the Welcome into the
		// member's intro mailbox (first-contact connection per member).
		for i := range k {
			r.intro = append(r.intro, measure("intro", i))
		}
		// Members join and announce their mailboxes; each must have read
		// the k messages sent so far, once.
		start := time.Now()
		parallel(t, n-1, func(i int) error {
			ev, err := members[i].Sync(ctx)
			if err != nil {
				return fmt.Errorf("%s sync: %w", handles[i], err)
			}
			var got []string
			for _, e := range ev {
				if e.Kind == client.EventAlarm {
					return fmt.Errorf("%s: alarm %v", handles[i], e.Alarm)
				}
				if e.Kind == client.EventMessage {
					got = append(got, e.Text)
				}
			}
			if want := numbered("intro", k); !slices.Equal(got, want) {
				return fmt.Errorf("%s got %q, want %q", handles[i], got, want)
			}
			return nil
		})
		r.introSync = time.Since(start)
		// The creator reads every announcement: from now on each member's
		// envelope goes to its conversation mailbox.
		start = time.Now()
		ev, err := owner.Sync(ctx)
		if err != nil {
			t.Fatalf("%s owner sync: %v", prefix, err)
		}
		r.joined = time.Since(start)
		added := 0
		for _, e := range ev {
			if e.Kind == client.EventMemberAdded {
				added++
			}
		}
		if added != n-1 {
			t.Fatalf("%s: the creator saw %d of %d members announce their mailboxes", prefix, added, n-1)
		}
		for i := range k {
			r.conv = append(r.conv, measure("conv", i))
		}
		// Spot-check delivery: the first and the last member get the k
		// messages once, in order.
		for _, i := range slices.Compact([]int{0, n - 2}) {
			var got []string
			for _, e := range mustSync(t, ctx, members[i]) {
				if e.Kind == client.EventMessage && e.From == prefix+"-owner" {
					got = append(got, e.Text)
				}
			}
			if want := numbered("conv", k); !slices.Equal(got, want) {
				t.Fatalf("%s got %q, want %q", handles[i], got, want)
			}
		}
		r.mlsMs = mlsSendCost(t, n, max(3, 60/n))
		rows = append(rows, r)
		t.Logf("%s: setup (register %d, create) %.1f s; members' first sync %.1f s; creator reads %d announcements %.1f s",
			prefix, n, r.setup, r.introSync.Seconds(), n-1, r.joined.Seconds())
	}

	t.Logf("group Send from the creator until the outbox is empty (Pending()==0), GOMAXPROCS=%d", runtime.GOMAXPROCS(0))
	t.Logf("%8s %6s %12s %12s %12s %14s %12s %12s %14s %14s", "members", "sends", "p50_ms", "mean_ms", "per_mbr_ms", "intro_p50_ms", "mls_once_ms", "seal_ms", "allocs/send", "KiB/send")
	for _, r := range rows {
		per := (r.conv.pct(50) - r.mlsMs) / float64(r.n-1)
		t.Logf("%8d %6d %12.2f %12.2f %12.3f %14.2f %12.3f %12.3f %14.0f %14.0f", r.n, len(r.conv), r.conv.pct(50), r.conv.mean(), per, r.intro.pct(50), r.mlsMs, sealMs, r.allocs, r.bytes/1024)
	}
	if len(rows) >= 2 {
		a, b := rows[0], rows[len(rows)-1]
		slope := (b.conv.pct(50) - a.conv.pct(50)) / float64(b.n-a.n)
		t.Logf("marginal cost per extra member (%d→%d): %.3f ms; of which seal %.3f ms, raw Send call %.3f ms, rest (tokens, outbox state) %.3f ms",
			a.n, b.n, slope, sealMs, rawSend.pct(50), slope-sealMs-rawSend.pct(50))
		t.Logf("marginal allocations per extra member (%d→%d): %.0f", a.n, b.n, (b.allocs-a.allocs)/float64(b.n-a.n))
		if len(projected) > 0 {
			// Fixed part: what the largest measured size costs beyond its
			// members and its MLS step.
			fixed := b.conv.pct(50) - b.mlsMs - float64(b.n-1)*slope
			for _, n := range projected {
				m := mlsSendCost(t, n, max(3, 60/n))
				t.Logf("projected %d members: %.1f ms per Send = MLS once %.3f ms (measured) + %d × %.3f ms + fixed %.2f ms",
					n, m+float64(n-1)*slope+fixed, m, n-1, slope, fixed)
			}
		}
	}
}

// numbered are the k texts "label 0" … "label k-1".
func numbered(label string, k int) []string {
	var out []string
	for i := range k {
		out = append(out, fmt.Sprintf("%s %d", label, i))
	}
	return out
}

func mustSync(t *testing.T, ctx context.Context, c *client.Client) []client.Event {
	t.Helper()
	ev, err := c.Sync(ctx)
	if err != nil {
		t.Fatalf("%s sync: %v", c.Handle(), err)
	}
	for _, e := range ev {
		if e.Kind == client.EventAlarm {
			t.Errorf("%s: alarm %v", c.Handle(), e.Alarm)
		}
	}
	return ev
}

// parallel runs f for 0 … n-1 on at most GOMAXPROCS+2 goroutines (most
// of the work waits on the network and on KT epochs) and fails the test
// with every error.
func parallel(t *testing.T, n int, f func(i int) error) {
	t.Helper()
	sem := make(chan struct{}, runtime.GOMAXPROCS(0)+2)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := f(i); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
}

// mlsSendCost is the MLS part of one Send in a group of n members, in
// milliseconds: the client loads the group state, encrypts once and
// stores the state again.
func mlsSendCost(t *testing.T, n, iters int) float64 {
	t.Helper()
	cfg := &mls.Config{}
	id := func(h string) *mls.Identity {
		i, err := mls.NewBasicIdentity(client.DefaultSuite, []byte(h))
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	g, err := mls.Create(id("owner"), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	var kps []*mls.KeyPackage
	for i := 1; i < n; i++ {
		kpp, err := mls.NewKeyPackage(id(fmt.Sprintf("m%03d", i)), nil)
		if err != nil {
			t.Fatal(err)
		}
		kps = append(kps, &kpp.KeyPackage)
	}
	if _, err := g.Add(kps...); err != nil {
		t.Fatal(err)
	}
	state, err := g.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	// A text with a KT checkpoint, as the client sends.
	plain, err := (&content.Message{Kind: content.KindText, Seq: 1, SentAt: uint64(time.Now().Unix()), Checkpoint: make([]byte, 400), Text: "group message 0"}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for range iters {
		g, err := mls.UnmarshalGroup(state, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.Encrypt(plain); err != nil {
			t.Fatal(err)
		}
		if state, err = g.Marshal(); err != nil {
			t.Fatal(err)
		}
	}
	return float64(time.Since(start)) / float64(iters) / float64(time.Millisecond)
}

// sealCost is one sealed.Seal of an MLS message for a Send record with a
// token, in milliseconds.
func sealCost(t *testing.T, iters int) float64 {
	t.Helper()
	sk, err := sealed.GenerateMailboxKey()
	if err != nil {
		t.Fatal(err)
	}
	policy, err := sealed.PlaintextPolicy(padding.Default, tokens.TokenSize)
	if err != nil {
		t.Fatal(err)
	}
	_, idKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var to wire.ID
	rand.Read(to[:])
	payload := []byte(strings.Repeat("x", 600))
	from := sealed.SenderIdentity{Key: idKey, Handle: "g128-owner"}
	start := time.Now()
	for range iters {
		if _, err := sealed.Seal(policy, sk.Public(), to, from, sealed.ContentMLS, payload, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	return float64(time.Since(start)) / float64(iters) / float64(time.Millisecond)
}

// timeline places each measured message's parts on one time line, so
// that the path can be cut where the parts do not say: from alice's Send
// request leaving to the envelope's arrival at bob, against the raw
// path's Send start to its arrival.
type timeline struct {
	mu   sync.Mutex
	on   bool
	cur  *msgTimes
	msgs []*msgTimes
	rawS dist
	rawL dist
}

type msgTimes struct {
	start, wireStart, wireEnd, arrival, shown time.Time
}

func (tl *timeline) start() {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.on = true
}

func (tl *timeline) begin(start time.Time) *msgTimes {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	m := &msgTimes{start: start}
	tl.cur = m
	if tl.on {
		tl.msgs = append(tl.msgs, m)
	}
	return m
}

func (tl *timeline) raw(s, l time.Duration) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.rawS, tl.rawL = append(tl.rawS, s), append(tl.rawL, l)
}

func (tl *timeline) alice(part string, d time.Duration) {
	now := time.Now()
	tl.mu.Lock()
	defer tl.mu.Unlock()
	// The last Send of the message is the one that carried it: a text
	// the connection's allowance could not pay is tried early (nothing
	// sent) and then sent by the outbox pass with a token.
	if tl.cur != nil && part == client.TimeSendWire {
		tl.cur.wireStart, tl.cur.wireEnd = now.Add(-d), now
	}
}

func (tl *timeline) bob(part string, d time.Duration) {
	now := time.Now()
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if tl.cur != nil && part == client.TimeRecvWait {
		tl.cur.arrival = now.Add(-d)
	}
}

func (tl *timeline) log(t *testing.T) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var pre, net, ack, afterAck, shown, total dist
	for _, m := range tl.msgs {
		if m.wireStart.IsZero() || m.arrival.IsZero() {
			continue
		}
		pre = append(pre, m.wireStart.Sub(m.start))
		net = append(net, m.arrival.Sub(m.wireStart))
		ack = append(ack, m.wireEnd.Sub(m.wireStart))
		afterAck = append(afterAck, m.arrival.Sub(m.wireEnd))
		shown = append(shown, m.shown.Sub(m.arrival))
		total = append(total, m.shown.Sub(m.start))
	}
	var rawAfter dist
	for i := range tl.rawS {
		rawAfter = append(rawAfter, tl.rawL[i]-tl.rawS[i])
	}
	t.Logf("  timeline, message by message (%d DM, %d raw): p50 / mean ms", len(net), len(tl.rawL))
	t.Logf("    DM  start → Send request:        %6.2f / %6.2f", pre.pct(50), pre.mean())
	t.Logf("    DM  Send request → bob arrival:  %6.2f / %6.2f   raw Send start → arrival: %6.2f / %6.2f", net.pct(50), net.mean(), tl.rawL.pct(50), tl.rawL.mean())
	t.Logf("    DM  Send request → ack:          %6.2f / %6.2f   raw Send call:           %6.2f / %6.2f", ack.pct(50), ack.mean(), tl.rawS.pct(50), tl.rawS.mean())
	t.Logf("    DM  ack → arrival:               %6.2f / %6.2f   raw ack → arrival:       %6.2f / %6.2f", afterAck.pct(50), afterAck.mean(), rawAfter.pct(50), rawAfter.mean())
	t.Logf("    DM  arrival → callback:          %6.2f / %6.2f", shown.pct(50), shown.mean())
	t.Logf("    DM  total:                       %6.2f / %6.2f   (the parts' p50s add to %.2f: p50s do not add, means do)", total.pct(50), total.mean(), pre.pct(50)+net.pct(50)+shown.pct(50))
}
