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
	res.check(t)
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
