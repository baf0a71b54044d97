package cluster_test

import (
	"context"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/internal/cluster"
	"github.com/quicprochat/qpc/internal/pgtest"
)

// pgProxy forwards TCP connections to PostgreSQL until cut: then it
// closes every connection it carries and refuses new ones, as a network
// partition between the nodes and the database would.
type pgProxy struct {
	ln       net.Listener
	upstream string
	mu       sync.Mutex
	down     bool
	conns    map[net.Conn]bool
}

func startProxy(t *testing.T, upstream string) *pgProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pgProxy{ln: ln, upstream: upstream, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *pgProxy) serve(c net.Conn) {
	p.mu.Lock()
	if p.down {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.mu.Unlock()
	u, err := net.Dial("tcp", p.upstream)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.down {
		p.mu.Unlock()
		c.Close()
		u.Close()
		return
	}
	p.conns[c], p.conns[u] = true, true
	p.mu.Unlock()
	go func() { io.Copy(u, c); u.Close(); c.Close() }()
	io.Copy(c, u)
	c.Close()
	u.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, u)
	p.mu.Unlock()
}

func (p *pgProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *pgProxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

// waitReady polls node n's /readyz until ok(code, body), up to 60 s.
func waitReady(t *testing.T, n *cluster.Node, what string, ok func(int, string) bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, body := n.Ready()
		if ok(code, body) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d: /readyz %d %q 60 s after %s", n.Index, code, body, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestClusterDatabaseDown: two nodes lose their PostgreSQL (every
// connection cut, new ones refused). Each node's /readyz turns 503
// naming the store, its wake-up listener gauge drops to 0, and a send
// is not acknowledged (no OK for what is not committed). When the
// database is back, both nodes are ready again by themselves, the
// listener is up, and a send through one node is delivered to a
// subscriber on the other.
func TestClusterDatabaseDown(t *testing.T) {
	u, err := url.Parse(pgtest.DB(t))
	if err != nil {
		t.Fatal(err)
	}
	proxy := startProxy(t, u.Host)
	u.Host = proxy.ln.Addr().String()
	cl := cluster.Start(t, cluster.Options{Nodes: 2, Store: u.String(), Flags: loadFlags(100)})
	for _, n := range cl.Nodes {
		waitReady(t, n, "start", func(code int, _ string) bool { return code == 200 })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	toks := mintTokens(ctx, t, cl.Nodes[0].Addr(), 8)
	a, err := protocol.Dial(ctx, cl.Nodes[0].Addr(), clientOptions)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := protocol.Dial(ctx, cl.Nodes[1].Addr(), clientOptions)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	mb, err := b.CreateMailbox(ctx, toks[0])
	if err != nil {
		t.Fatal(err)
	}

	proxy.cut()
	for _, n := range cl.Nodes {
		waitReady(t, n, "the database was cut off", func(code int, body string) bool {
			return code == 503 && strings.Contains(body, "store")
		})
		if up := n.Metrics(t)["qpc_store_wake_listener_up"]; up != 0 {
			t.Errorf("node %d: qpc_store_wake_listener_up = %v with the database cut off, want 0", n.Index, up)
		}
	}
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	id := protocol.NewMessageID()
	if _, err := a.Send(sctx, mb.SendID, id, []byte("while the database is away"), toks[1]); err == nil {
		t.Error("a send was acknowledged while the database was unreachable")
	}
	scancel()

	proxy.restore()
	for _, n := range cl.Nodes {
		waitReady(t, n, "the database came back", func(code int, _ string) bool { return code == 200 })
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, n := range cl.Nodes {
		for n.Metrics(t)["qpc_store_wake_listener_up"] != 1 {
			if time.Now().After(deadline) {
				t.Fatalf("node %d: the wake-up listener is not back 60 s after the database", n.Index)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	sub, err := b.Subscribe(ctx, mb, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	<-sub.CaughtUp()
	id2 := protocol.NewMessageID()
	if _, err := a.Send(ctx, mb.SendID, id2, []byte("after the database came back"), toks[2]); err != nil {
		t.Fatalf("send after the database came back: %v", err)
	}
	timeout := time.After(30 * time.Second)
	for {
		select {
		case m, ok := <-sub.C:
			if !ok {
				t.Fatalf("subscription ended: %v", sub.Err())
			}
			if m.ID == id2 {
				return
			}
			// The send refused while the database was away may still
			// have been retried into it by the client: allowed, it was
			// never acknowledged.
		case <-timeout:
			t.Fatal("the send through node 0 did not reach node 1's subscriber in 30 s")
		}
	}
}
