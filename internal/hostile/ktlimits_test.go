package hostile_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/config"
	"github.com/quicprochat/qpc/wire"
)

// ktAccount registers handle on h without publishing anything and
// returns a KTPublish of a valid binding for it, which the test may send
// as often as it likes.
func ktAccount(t *testing.T, h *hostile.Server, handle string) *wire.KTPublish {
	t.Helper()
	ctx := ctxT(t)
	conn, err := protocol.Dial(ctx, h.Addr(handle), h.ClientOptions(t).Dial)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var dev [16]byte
	rand.Read(dev[:])
	sess, err := conn.Register(ctx, handle, []byte("password of "+handle), dev, handle)
	if err != nil {
		t.Fatal(err)
	}
	_, idKey, _ := ed25519.GenerateKey(rand.Reader)
	b := &kt.Binding{
		Label: handle, IdentityKeys: []ed25519.PublicKey{idKey.Public().(ed25519.PublicKey)},
		IntroKey: make([]byte, 1216),
	}
	if err := b.Sign(idKey); err != nil {
		t.Fatal(err)
	}
	return &wire.KTPublish{Session: sess.Token, Label: handle, Value: b.Marshal()}
}

// ktTally counts the answers to a flood of KT requests by kind.
type ktTally struct {
	mu    sync.Mutex
	ok    int
	codes map[wire.Code]int
	other []string
}

func (c *ktTally) add(m wire.Message, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.codes == nil {
		c.codes = map[wire.Code]int{}
	}
	switch m := m.(type) {
	case *wire.KTPublished, *wire.KTProof:
		c.ok++
	case *wire.ErrorMessage:
		c.codes[m.Code]++
	default:
		c.other = append(c.other, fmt.Sprintf("%T %v", m, err))
	}
}

func (c *ktTally) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("%d answered, refused %v, other %v", c.ok, c.codes, c.other)
}

// TestAttackKTPublishFlood: an account publishes forty bindings at once.
// The server publishes its burst (DefaultKTPublishBurst) and refuses the
// rest RATE_LIMITED, without queueing them; another account publishes
// all the while, and the flooder gets one more publish per quarter hour.
func TestAttackKTPublishFlood(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	flood := ktAccount(t, h, "mallory")
	alice := ktAccount(t, h, "alice")
	rc := h.Raw(t, "mallory")
	var c ktTally
	var wg sync.WaitGroup
	maxQueued := 0
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stopWatch:
				return
			default:
			}
			maxQueued = max(maxQueued, h.KT().Queued())
			time.Sleep(time.Millisecond)
		}
	}()
	for range 40 {
		wg.Go(func() { c.add(rc.RoundTrip(flood)) })
	}
	wg.Wait()
	close(stopWatch)
	<-watched
	t.Logf("40 publishes of one account: %s; at most %d queued at once", &c, maxQueued)
	if c.ok != config.DefaultKTPublishBurst || c.codes[wire.CodeRateLimited] != 40-config.DefaultKTPublishBurst {
		t.Fatalf("flood: %s; want %d published and the rest RATE_LIMITED", &c, config.DefaultKTPublishBurst)
	}
	if maxQueued > config.DefaultKTPublishBurst+2 { // and the token keys'
		t.Fatalf("%d publishes were queued at once, more than the account's burst", maxQueued)
	}
	if v, _ := h.KT().LatestVersion("mallory"); v != config.DefaultKTPublishBurst {
		t.Fatalf("mallory has %d versions, want %d", v, config.DefaultKTPublishBurst)
	}
	// Another account is not affected.
	if m, err := h.Raw(t, "alice").RoundTrip(alice); err != nil {
		t.Fatal(err)
	} else if _, ok := m.(*wire.KTPublished); !ok {
		t.Fatalf("alice's publish during mallory's flood: %v", m)
	}
	// The budget refills at kt_publish_rate: one publish after 15 minutes.
	h.Clock.Advance(time.Hour / config.DefaultKTPublishRate)
	var after ktTally
	after.add(rc.RoundTrip(flood))
	after.add(rc.RoundTrip(flood))
	if after.ok != 1 || after.codes[wire.CodeRateLimited] != 1 {
		t.Fatalf("a quarter hour later: %s; want one published, one refused", &after)
	}
}

// TestAttackKTLookupFlood: a stranger looks up labels nobody asked for,
// as fast as the server answers, each costing the server up to 20 VRF
// proofs. The proofs the server computes stay within the connection's
// budget (refusals RATE_LIMITED); the same lookup repeated costs nothing
// (the cache); a user on another connection still looks up a contact.
func TestAttackKTLookupFlood(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	alice := h.NewUser(t, "alice", "alice")
	h.NewUser(t, "bob", "bob")
	d := h.KT()
	rc := h.Raw(t, "mallory")

	// The same label, again and again: its proofs are computed once.
	before := d.ProofsComputed()
	var same ktTally
	for range 200 {
		same.add(rc.RoundTrip(&wire.KTLookup{Label: "alice"}))
	}
	if n := d.ProofsComputed() - before; same.ok != 200 || n > 20 {
		t.Fatalf("200 lookups of alice: %s, %d VRF proofs computed; want all answered, at most 20 proofs", &same, n)
	}
	t.Logf("200 lookups of one label: %d VRF proofs computed", d.ProofsComputed()-before)

	// New labels each time.
	before = d.ProofsComputed()
	start := time.Now()
	var fresh ktTally
	const n = 300
	for i := range n {
		fresh.add(rc.RoundTrip(&wire.KTLookup{Label: fmt.Sprintf("nobody%04d", i)}))
	}
	elapsed := time.Since(start)
	spent := d.ProofsComputed() - before
	budget := uint64(config.DefaultKTProofBurst) + uint64(config.DefaultKTProofRate*elapsed.Seconds()) + 20
	t.Logf("%d lookups of new labels in %v: %s; %d VRF proofs computed (budget %d; %d without one)", n, elapsed, &fresh, spent, budget, 20*n)
	if spent > budget {
		t.Fatalf("the stranger's lookups cost %d VRF proofs, more than the connection's budget %d", spent, budget)
	}
	if fresh.codes[wire.CodeRateLimited] == 0 {
		t.Fatalf("the flood was never refused: %s", &fresh)
	}
	// Alice, on her own connection, still finds bob.
	if _, err := alice.AddContact(ctxT(t), "bob"); err != nil {
		t.Fatalf("alice's lookup during the flood: %v", err)
	}
}

// TestAttackKTLookupFloodConnections: strangers on several connections
// together are held to the server's budget of lookup proofs
// (kt_proof_rate_total), refused UNAVAILABLE beyond it.
func TestAttackKTLookupFloodConnections(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Server: func(o *server.Options) {
		o.KTProofBurst, o.KTProofRate = 200, 1
		o.KTProofBurstTotal, o.KTProofRateTotal = 400, 1
	}})
	d := h.KT()
	before := d.ProofsComputed()
	start := time.Now()
	var c ktTally
	var wg sync.WaitGroup
	for i := range 4 {
		rc := rawFrom(t, h, "mallory", fmt.Sprintf("127.0.0.%d", 2+i))
		wg.Go(func() {
			for j := range 20 {
				c.add(rc.RoundTrip(&wire.KTLookup{Label: fmt.Sprintf("nobody-%d-%d", i, j)}))
			}
		})
	}
	wg.Wait()
	spent := d.ProofsComputed() - before
	budget := 400 + uint64(time.Since(start).Seconds()) + 20
	t.Logf("4 connections × 20 lookups of new labels: %s; %d VRF proofs computed (server budget %d)", &c, spent, budget)
	if spent > budget {
		t.Fatalf("%d VRF proofs computed, more than the server's budget %d", spent, budget)
	}
	if c.codes[wire.CodeUnavailable] == 0 {
		t.Fatalf("the server's budget never refused: %s", &c)
	}
}

// TestAttackKTVersionCap: a handle at kt.DefaultMaxVersions versions is
// refused another with QUOTA, and nothing is published.
func TestAttackKTVersionCap(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	pub := ktAccount(t, h, "mallory")
	d := h.KT()
	// The versions before the last, straight into the directory (through
	// the server they would take days at the publish rate).
	for range kt.DefaultMaxVersions - 1 {
		if _, err := d.Enqueue("mallory", pub.Value); err != nil {
			t.Fatal(err)
		}
	}
	waitVersion(t, d, "mallory", kt.DefaultMaxVersions-1)
	rc := h.Raw(t, "mallory")
	m, err := rc.RoundTrip(pub)
	if p, ok := m.(*wire.KTPublished); !ok || p.Version != kt.DefaultMaxVersions {
		t.Fatalf("the last version: %v %v", m, err)
	}
	m, err = rc.RoundTrip(pub)
	e, ok := m.(*wire.ErrorMessage)
	if !ok || e.Code != wire.CodeQuota {
		t.Fatalf("a publish past the cap: %v %v, want QUOTA", m, err)
	}
	t.Logf("past the cap: %s %q", e.Code, e.Detail)
	time.Sleep(2 * h.KT().Config().EpochInterval)
	if v, _ := d.LatestVersion("mallory"); v != kt.DefaultMaxVersions {
		t.Fatalf("mallory has %d versions, want %d", v, kt.DefaultMaxVersions)
	}
}

func waitVersion(t *testing.T, d *kt.Directory, label string, want uint32) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		v, err := d.LatestVersion(label)
		if err != nil {
			t.Fatal(err)
		}
		if v == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s reached version %d, want %d", label, v, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAttackKTTimedOutPublish: a client sends a publish and goes away
// before the epoch. The server withdraws the update: it is never
// published (the client, had it waited, would have been told it was
// not), and the account's next publish is version 1.
//
// The test holds the epochs at a gate in the tree store while the publish
// is queued and withdrawn, so that no epoch can take it in between
// however slow the machine is (a 1 s epoch was not always long enough for
// a publish to be queued and withdrawn under load).
func TestAttackKTTimedOutPublish(t *testing.T) {
	gate := &gatedTree{held: make(chan struct{}, 1)}
	h := hostile.Start(t, hostile.Options{KT: func(_ *server.KTKeys, o *kt.DirectoryOptions) {
		st, err := kt.OpenBoltTree(o.Dir)
		if err != nil {
			t.Fatal(err)
		}
		gate.TreeStore, o.Tree = st, gate
	}})
	pub := ktAccount(t, h, "mallory")
	d := h.KT()
	rc := h.Raw(t, "mallory")
	// An epoch waits at the gate with what it took from the queue; the
	// next cannot start until it is done.
	gate.hold()
	t.Cleanup(gate.release) // registered after Start's: runs before the directory closes
	select {
	case <-gate.held:
	case <-time.After(30 * time.Second):
		t.Fatal("no epoch reached the gate")
	}
	q0 := d.Queued()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := rc.QUIC.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := wire.WriteMessage(st, rc.Policy, pub); err != nil {
		t.Fatal(err)
	}
	st.Close()
	waitQueued(t, d, q0+1)
	// The client gives up and goes away.
	st.CancelRead(0)
	waitQueued(t, d, q0)
	// Two epochs later (the held one, then one that found the queue as
	// the withdrawal left it), nothing of mallory's is in the log.
	cp, err := d.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	gate.release()
	for n, size := 0, cp.Size; n < 2; {
		deadline := time.Now().Add(30 * time.Second)
		for cp.Size == size {
			if time.Now().After(deadline) {
				t.Fatalf("no epoch served in 30 s after epoch %d", n)
			}
			time.Sleep(5 * time.Millisecond)
			if cp, err = d.Checkpoint(); err != nil {
				t.Fatal(err)
			}
		}
		n, size = n+1, cp.Size
	}
	if v, _ := d.LatestVersion("mallory"); v != 0 {
		t.Fatalf("the publish its client gave up on was published later, as version %d", v)
	}
	m, err := rc.RoundTrip(pub)
	if p, ok := m.(*wire.KTPublished); !ok || p.Version != 1 {
		t.Fatalf("the next publish: %v %v, want version 1", m, err)
	}
}

// gatedTree is the directory's tree store with a gate before each epoch's
// commit: while hold is in force, an epoch waits there (holding the
// directory's epoch lock, so no other epoch starts) and says so on held.
type gatedTree struct {
	kt.TreeStore
	held chan struct{}
	mu   sync.Mutex
	gate chan struct{}
}

func (g *gatedTree) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gate = make(chan struct{})
}

func (g *gatedTree) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gate != nil {
		close(g.gate)
		g.gate = nil
	}
}

func (g *gatedTree) CommitEpoch(ctx context.Context, c kt.EpochCommit) error {
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		select {
		case g.held <- struct{}{}:
		default:
		}
		<-gate
	}
	return g.TreeStore.CommitEpoch(ctx, c)
}

func waitQueued(t *testing.T, d *kt.Directory, want int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for d.Queued() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d publishes queued, want %d", d.Queued(), want)
		}
		time.Sleep(time.Millisecond)
	}
}
