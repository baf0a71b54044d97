package cluster_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/note"

	"github.com/quicprochat/qpc/account"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/internal/cluster"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/audit"
)

// ktLease reads the KT sequencer's lease row (internal/pglease's
// qpc_leases): its holder and fencing token, or "" when there is none yet.
func ktLease(ctx context.Context, t *testing.T, store string) (holder string, token int64) {
	t.Helper()
	conn, err := pgx.Connect(ctx, store)
	if err != nil {
		t.Fatalf("connect to the cluster's database: %v", err)
	}
	defer conn.Close(ctx)
	err = conn.QueryRow(ctx, `SELECT holder, token FROM qpc_leases WHERE name LIKE '%kt%' AND expires_at > clock_timestamp()`).Scan(&holder, &token)
	if err == pgx.ErrNoRows {
		return "", 0
	}
	if err != nil {
		t.Fatalf("read the KT lease: %v (is the KT directory on PostgreSQL with a sequencer lease, h-ktnodes?)", err)
	}
	return holder, token
}

// ktPublisher is one account publishing new versions of its own label.
type ktPublisher struct {
	handle string
	conn   *protocol.Conn
	sess   *protocol.Session
	owner  *protocol.KTOwner
	priv   ed25519.PrivateKey

	mu    sync.Mutex
	acked byte // IntroSendID[0] of the last binding whose publish returned OK
	errs  int
}

func (p *ktPublisher) binding(t *testing.T, n byte) *kt.Binding {
	b := &kt.Binding{
		Label:        p.handle,
		IdentityKeys: []ed25519.PublicKey{p.priv.Public().(ed25519.PublicKey)},
		IntroKey:     make([]byte, 1216),
		TokenKeys:    []kt.TokenKeyCommitment{{Epoch: 1}},
	}
	b.IntroSendID[0] = n
	if err := b.Sign(p.priv); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAttackClusterKTSequencerKilled: three nodes on one database, the KT
// directory on PostgreSQL with one sequencer by lease. Accounts publish
// new bindings through all nodes while the sequencer's node is killed
// with SIGKILL. Another node takes the lease over (its fencing token
// grows), the log keeps growing, every publish that returned OK is what
// a verified lookup finds at the end, and an independent auditor
// (kt/audit, replaying every epoch from the tiles) accepts the log from a
// checkpoint before the kill to one after it: the takeover neither forked
// nor rewrote the log.
func TestAttackClusterKTSequencerKilled(t *testing.T) {
	cl := cluster.Start(t, cluster.Options{Nodes: 3, Flags: append(loadFlags(100), "--kt-epoch", "300ms")})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pin, err := protocol.ParseKTPin(cl.KTPin(t))
	if err != nil {
		t.Fatal(err)
	}
	logKey, err := note.NewVerifier(pin.VKey)
	if err != nil {
		t.Fatal(err)
	}

	// The sequencer: the lease's holder. Node 0 started alone first, so it
	// took the lease; the check below says so or fails.
	deadline := time.Now().Add(60 * time.Second)
	holder0, token0 := ktLease(ctx, t, cl.Store)
	for holder0 == "" && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		holder0, token0 = ktLease(ctx, t, cl.Store)
	}
	if holder0 == "" {
		t.Fatal("no node holds the KT sequencer lease after 60 s")
	}

	// Publishers, spread over the nodes by the multi-endpoint address.
	const accounts = 6
	pubs := make([]*ktPublisher, accounts)
	for i := range pubs {
		c, err := protocol.Dial(ctx, cl.Address(), clientOptions)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		var dev account.DeviceID
		rand.Read(dev[:])
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		handle := fmt.Sprintf("kt%x", dev[:4])
		sess, err := c.Register(ctx, handle, []byte("kt test password"), dev, handle, cheapKSF)
		if err != nil {
			t.Fatalf("register %s: %v", handle, err)
		}
		pubs[i] = &ktPublisher{handle: handle, conn: c, sess: sess, owner: protocol.NewKTOwner(handle), priv: priv}
	}

	// The auditor reads node 2's tiles (the log is in the shared
	// database: any node serves all of it), or node 0's once node 2 is
	// the one killed; its state file lets it resume on another node.
	auditPath := filepath.Join(t.TempDir(), "audit.db")
	var auditor *audit.Auditor
	auditOn := func(n *cluster.Node) {
		if auditor != nil {
			auditor.Close()
		}
		if auditor, err = audit.Open(auditPath, audit.Options{Log: audit.HTTPLog(n.KTURL(), nil), Verifier: logKey}); err != nil {
			t.Fatal(err)
		}
	}
	auditOn(cl.Nodes[2])
	defer func() { auditor.Close() }()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, p := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := byte(1); ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				b := p.binding(t, n)
				// A publish that fails (its node died, the sequencer is
				// being replaced) is retried with the same binding until
				// it is acknowledged: only then does the next one start.
				for {
					pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
					_, _, err := p.conn.KTPublish(pctx, p.sess, p.owner, b)
					pcancel()
					if err == nil {
						break
					}
					p.mu.Lock()
					p.errs++
					p.mu.Unlock()
					select {
					case <-stop:
						return
					case <-time.After(200 * time.Millisecond):
					}
				}
				p.mu.Lock()
				p.acked = n
				p.mu.Unlock()
			}
		}()
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	// Let epochs commit, then audit up to a checkpoint from before the kill.
	var before *kt.Checkpoint
	for before == nil || before.Size < 4 {
		if time.Now().After(deadline.Add(60 * time.Second)) {
			t.Fatalf("the log did not reach 4 epochs before the kill: %+v", before)
		}
		time.Sleep(300 * time.Millisecond)
		cp, err := auditor.Follow(ctx)
		var refused *audit.Error
		switch {
		case errors.As(err, &refused):
			t.Fatalf("the auditor refuses the log before the kill: %v", err)
		case err != nil:
			t.Logf("audit before the kill: %v (not evidence; retrying)", err)
		default:
			before = cp
		}
	}

	// Kill the sequencer. Its lease holder's name (host and a random
	// tag) does not say which node it is, so kill node 0 first (it started
	// alone, so it most likely took the lease): if the lease is still
	// renewed by the same holder well past its time to live, node 0 was
	// not the sequencer; restart it and try the next node.
	const leaseTTL = 10 * time.Second // pgseq.DefaultTTL
	var (
		seq      int
		holder1  string
		token1   int64
		killedAt time.Time
	)
	for seq = 0; ; seq++ {
		if seq == len(cl.Nodes) {
			t.Fatalf("killed each node in turn, and the KT lease (holder %q, token %d) never moved", holder0, token0)
		}
		if seq == 2 {
			auditOn(cl.Nodes[0])
		}
		cl.Kill(t, seq)
		killedAt = time.Now()
		moved := false
		for time.Since(killedAt) < 3*leaseTTL+30*time.Second {
			holder1, token1 = ktLease(ctx, t, cl.Store)
			if holder1 != "" && holder1 != holder0 && token1 > token0 {
				moved = true
				break
			}
			if holder1 == holder0 && time.Since(killedAt) > 2*leaseTTL+5*time.Second {
				break // renewed by a living node: not the sequencer
			}
			time.Sleep(200 * time.Millisecond)
		}
		if moved {
			break
		}
		if holder1 != holder0 {
			t.Fatalf("no takeover %v after the sequencer's node %d was killed: lease %q token %d (before: %q token %d)", time.Since(killedAt).Round(time.Second), seq, holder1, token1, holder0, token0)
		}
		t.Logf("node %d was not the KT sequencer (lease still renewed by %q): restarting it", seq, holder0)
		cl.Restart(t, seq)
	}
	survivor := cl.Nodes[2]
	if seq == 2 {
		survivor = cl.Nodes[0]
	}
	takeover := time.Since(killedAt)

	// The log keeps growing: epochs after the takeover, audited.
	var after *kt.Checkpoint
	for after == nil || after.Size < before.Size+4 {
		if time.Since(killedAt) > 2*time.Minute {
			t.Fatalf("the log stopped at %v (before the kill: %d epochs)", after, before.Size)
		}
		time.Sleep(300 * time.Millisecond)
		cp, err := auditor.Follow(ctx)
		var refused *audit.Error
		switch {
		case errors.As(err, &refused):
			t.Fatalf("the auditor refuses the log after the takeover: %v", err)
		case err != nil:
			t.Logf("audit after the takeover: %v (not evidence; retrying)", err)
		default:
			after = cp
		}
	}
	close(stop)
	wg.Wait()

	// Every acknowledged publish is what a verified lookup finds.
	v, err := pin.Verifier()
	if err != nil {
		t.Fatal(err)
	}
	lc, err := protocol.Dial(ctx, survivor.Addr(), clientOptions)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	errs := 0
	for _, p := range pubs {
		p.mu.Lock()
		want, e := p.acked, p.errs
		p.mu.Unlock()
		errs += e
		if want == 0 {
			t.Errorf("%s: no publish acknowledged", p.handle)
			continue
		}
		var got *kt.Binding
		for {
			_, b, err := lc.KTLookup(ctx, v, p.handle)
			if err != nil {
				t.Fatalf("lookup %s: %v", p.handle, err)
			}
			got = b
			if got != nil && got.IntroSendID[0] >= want || time.Since(killedAt) > 3*time.Minute {
				break
			}
			time.Sleep(300 * time.Millisecond) // the last publish's epoch may still be committing
		}
		if got == nil || got.IntroSendID[0] != want {
			t.Errorf("%s: lookup finds binding %v, the last acknowledged publish was %d", p.handle, got, want)
		}
	}
	fmt.Printf("cluster-kt: killed=node%d holder=%q token=%d→%d takeover_s=%.1f epochs_before=%d epochs_after=%d publish_retries=%d\n",
		seq, holder0, token0, token1, takeover.Seconds(), before.Size, after.Size, errs)
}
