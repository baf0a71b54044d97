// Package cluster runs several real qpc-server processes that share one
// real PostgreSQL database, for tests of issue 21 (several stateless
// nodes on one database): cross-node delivery, a node killed with
// SIGKILL mid-run and restarted, the KT sequencer taking over.
//
// Call Start first, from a test whose package's TestMain calls
// pgtest.Main (the database comes from internal/pgtest):
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
//	c := cluster.Start(t, cluster.Options{Nodes: 3})
//	addr := c.Nodes[1].Addr() // qpc:// address of node 1
//	c.Kill(t, 1)              // kill -9
//	c.Restart(t, 1)           // same data directory, same ports
//
// Every node is the built cmd/qpc-server binary (go build, once per test
// process), run with a data directory of its own, on 127.0.0.1 ports
// chosen once and kept across restarts, so its address does not change.
// The nodes share one key set: the first node creates its data directory
// and keys, and its tls.key, opaque.key, tokens.key and KT keys are
// copied into the other nodes' data directories before they start, so all
// nodes present one server (one pin, one OPAQUE key, one token secret, one
// KT key pair; nodes on one database refuse another key set, ADR 0039).
// Cluster.Address is the one multi-endpoint address of them all.
//
// Options.Store "bbolt" runs the nodes on their own bbolt files instead
// (the one-node baseline of the figures; several bbolt nodes share
// nothing).
//
// Its tests: TestClusterCrossNode (exactly-once delivery across three
// nodes), TestAttackClusterNodeKilled (a node killed under load),
// TestAttackClusterKTSequencerKilled (the KT sequencer's node killed, audited),
// TestClusterDatabaseDown (the nodes cut off from PostgreSQL), and,
// with QPC_CLUSTER_FIGURES=1, the figures of docs/scaling.md.
//
// The package holds a test harness: only tests and other harnesses import
// it (internal/arch).
package cluster
