package cluster_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/quicprochat/qpc/internal/cluster"
)

// TestClusterCrossNode: three nodes on one PostgreSQL database, clients
// spread over them, each sending to random others: every acknowledged
// send is delivered exactly once, also when the sender's node is not the
// receiver's (a send through node A must wake a subscriber on node B),
// and such crossings happen.
func TestClusterCrossNode(t *testing.T) {
	const clients = 30
	cl := cluster.Start(t, cluster.Options{Nodes: 3, Flags: loadFlags(clients + 100)})
	res := runLoad(t, cl, loadOpts{clients: clients, window: 8 * time.Second, interval: 500 * time.Millisecond, drain: 30 * time.Second})
	fmt.Printf("cluster-crossnode: nodes=3 clients=%d %s\n", clients, res)
	res.check(t, false)
	if res.crossed == 0 {
		t.Errorf("no delivery crossed nodes (%d delivered): the run did not test cross-node delivery", res.delivered)
	}
	if want := clients * 8 / 4; res.sent < want {
		t.Errorf("only %d sends acknowledged, want at least %d", res.sent, want)
	}
	for _, n := range cl.Nodes {
		n.Alive(t)
	}
}

// TestAttackClusterNodeKilled: three nodes under load, one killed with SIGKILL
// halfway through the window. Every client has the one address listing
// the three nodes; the clients of the killed node move to the others by
// themselves (client/protocol's failover: Sends retried under their
// message IDs, subscriptions resumed after their last sequence number).
// Every send that returned OK is delivered exactly once, nothing is
// delivered that no Send acknowledged, no send fails for good, and the
// killed node comes back on its data directory and serves again.
func TestAttackClusterNodeKilled(t *testing.T) {
	const clients = 30
	cl := cluster.Start(t, cluster.Options{Nodes: 3, Flags: loadFlags(clients + 100)})
	killed := make(chan struct{})
	res := runLoad(t, cl, loadOpts{
		clients: clients, window: 12 * time.Second, interval: 500 * time.Millisecond, drain: 45 * time.Second,
		failover: true,
		at: func() {
			cl.Kill(t, 1)
			close(killed)
		},
	})
	<-killed
	fmt.Printf("cluster-failover: nodes=3 killed=1 clients=%d %s\n", clients, res)
	res.check(t, true)
	// About a third of the clients were on the killed node and kept
	// sending.
	if res.failovers == 0 {
		t.Errorf("no client moved to another node: the kill did not test failover")
	}
	if res.crossed == 0 {
		t.Errorf("no delivery crossed nodes (%d delivered)", res.delivered)
	}
	cl.Nodes[0].Alive(t)
	cl.Nodes[2].Alive(t)

	// The killed node restarts on its data directory and serves: a fresh
	// run with clients on it only delivers through the others too.
	cl.Restart(t, 1)
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := cl.Nodes[1].Ready()
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted node not ready in 30 s: %d %s", code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	res2 := runLoad(t, cl, loadOpts{clients: 6, window: 3 * time.Second, interval: 500 * time.Millisecond, drain: 30 * time.Second})
	fmt.Printf("cluster-failover-restarted: %s\n", res2)
	res2.check(t, false)
}
