package cluster_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/internal/cluster"
	"github.com/quicprochat/qpc/internal/loadtest/loadkit"
	"github.com/quicprochat/qpc/wire"
)

// pgCounters are the database-wide costs read around a run.
type pgCounters struct {
	commits int64 // pg_stat_database.xact_commit of the cluster's database
	wal     int64 // pg_current_wal_lsn in bytes
}

func readPG(t *testing.T, store string) pgCounters {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, store)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	// The statistics are flushed by each backend at most once a second
	// (pgstat); ask for a fresh snapshot of what has been flushed.
	var c pgCounters
	if _, err := conn.Exec(ctx, "SELECT pg_stat_clear_snapshot()"); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `SELECT xact_commit, pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint FROM pg_stat_database WHERE datname = current_database()`).Scan(&c.commits, &c.wal); err != nil {
		t.Fatalf("read pg_stat_database: %v", err)
	}
	return c
}

// sumMetric sums a series over the running nodes.
func sumMetric(t *testing.T, cl *cluster.Cluster, name string) float64 {
	sum := 0.0
	for _, n := range cl.Nodes {
		if n.Running() {
			sum += n.Metrics(t)[name]
		}
	}
	return sum
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// TestClusterFigures measures, in one run, interleaved round by round,
// the load test's throughput and delivery latency on one node over bbolt,
// one node over PostgreSQL and three nodes over PostgreSQL, and the
// per-message costs in PostgreSQL (commits, WAL bytes) and in the nodes
// (store commits, cross-node wake-ups): the figures of docs/scaling.md.
// It is long (QPC_CLUSTER_FIGURES=1; QPC_CLUSTER_ROUNDS, default 5;
// QPC_CLUSTER_CLIENTS, default 60; QPC_LOAD_INTERVAL, default 100ms).
func TestClusterFigures(t *testing.T) {
	if os.Getenv("QPC_CLUSTER_FIGURES") != "1" {
		t.Skip("long: set QPC_CLUSTER_FIGURES=1 to measure docs/scaling.md's figures")
	}
	rounds, clients, interval := 5, 60, 100*time.Millisecond
	if v, err := strconv.Atoi(os.Getenv("QPC_CLUSTER_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	if v, err := strconv.Atoi(os.Getenv("QPC_CLUSTER_CLIENTS")); err == nil && v > 1 {
		clients = v
	}
	if d, err := time.ParseDuration(os.Getenv("QPC_LOAD_INTERVAL")); err == nil && d > 0 {
		interval = d
	}
	flags := loadFlags(clients*rounds + 100)
	setups := []struct {
		name string
		cl   *cluster.Cluster
	}{
		{"bolt1", cluster.Start(t, cluster.Options{Nodes: 1, Store: cluster.StoreBolt, Flags: flags})},
		{"pg1", cluster.Start(t, cluster.Options{Nodes: 1, Flags: flags})},
		{"pg3", cluster.Start(t, cluster.Options{Nodes: 3, Flags: flags})},
	}
	type series struct{ rate, p50, p99, sendP50, cpu, pgCommits, walBytes, nodeCommits, wakes []float64 }
	got := map[string]*series{}
	for _, s := range setups {
		got[s.name] = &series{}
	}
	for r := range rounds {
		for k := range setups {
			// Rotate the order each round, so no setup always runs first.
			s := setups[(k+r)%len(setups)]
			pg := s.name != "bolt1"
			var pg0, pg1 pgCounters
			var c0, c1, w0, w1 float64
			res := runLoad(t, s.cl, loadOpts{
				clients: clients, window: 5 * time.Second, interval: interval, drain: 30 * time.Second,
				pre: func() {
					if pg {
						pg0 = readPG(t, s.cl.Store)
					}
					c0 = sumMetric(t, s.cl, "qpc_store_commit_duration_seconds_count")
					w0 = sumMetric(t, s.cl, "qpc_store_wakes_total")
				},
				post: func() {
					// Let every backend flush its statistics (at most once a
					// second) before reading them.
					time.Sleep(1500 * time.Millisecond)
					if pg {
						pg1 = readPG(t, s.cl.Store)
					}
					c1 = sumMetric(t, s.cl, "qpc_store_commit_duration_seconds_count")
					w1 = sumMetric(t, s.cl, "qpc_store_wakes_total")
				},
			})
			res.check(t, false)
			g := got[s.name]
			n := float64(res.sent)
			g.rate = append(g.rate, res.rate)
			g.p50 = append(g.p50, res.p50)
			g.p99 = append(g.p99, res.p99)
			g.sendP50 = append(g.sendP50, res.sendP50)
			g.cpu = append(g.cpu, res.cpuPct)
			g.nodeCommits = append(g.nodeCommits, (c1-c0)/n)
			g.wakes = append(g.wakes, (w1-w0)/n)
			if pg {
				g.pgCommits = append(g.pgCommits, float64(pg1.commits-pg0.commits)/n)
				g.walBytes = append(g.walBytes, float64(pg1.wal-pg0.wal)/n)
			}
			fmt.Printf("cluster-figures: round=%d setup=%s %s pg_commits_per_msg=%.2f wal_bytes_per_msg=%.0f node_commits_per_msg=%.2f wakes_per_msg=%.2f\n",
				r, s.name, res, float64(pg1.commits-pg0.commits)/n, float64(pg1.wal-pg0.wal)/n, (c1-c0)/n, (w1-w0)/n)
		}
	}
	for _, s := range setups {
		g := got[s.name]
		fmt.Printf("cluster-figures-median: setup=%s rounds=%d clients=%d offered_msgs_per_s=%.0f msgs_per_s=%.1f p50_ms=%.2f p99_ms=%.2f send_p50_ms=%.2f nodes_cpu_pct=%.0f pg_commits_per_msg=%.2f wal_bytes_per_msg=%.0f node_commits_per_msg=%.2f wakes_per_msg=%.2f\n",
			s.name, rounds, clients, float64(clients)/interval.Seconds(), median(g.rate), median(g.p50), median(g.p99), median(g.sendP50), median(g.cpu),
			median(g.pgCommits), median(g.walBytes), median(g.nodeCommits), median(g.wakes))
	}
	b, p1, p3 := got["bolt1"], got["pg1"], got["pg3"]
	fmt.Printf("cluster-figures-ratios: pg1/bolt1 msgs_per_s=%.2f p50=%.2f p99=%.2f; pg3/pg1 msgs_per_s=%.2f p50=%.2f p99=%.2f; loadavg=%s\n",
		median(p1.rate)/median(b.rate), median(p1.p50)/median(b.p50), median(p1.p99)/median(b.p99),
		median(p3.rate)/median(p1.rate), median(p3.p50)/median(p1.p50), median(p3.p99)/median(p1.p99), loadkit.LoadAvg())
}

// TestClusterBytesPerMessage measures what a queued message takes in
// PostgreSQL at rest: the growth of the store's tables, indexes and
// TOAST (pg_total_relation_size over the schema) per message sent and
// not yet acknowledged, with the load test's 1,000-byte envelopes. Long
// with the figures (QPC_CLUSTER_FIGURES=1).
func TestClusterBytesPerMessage(t *testing.T) {
	if os.Getenv("QPC_CLUSTER_FIGURES") != "1" {
		t.Skip("long: set QPC_CLUSTER_FIGURES=1 to measure docs/scaling.md's figures")
	}
	const mailboxes, perMailbox = 10, 200
	cl := cluster.Start(t, cluster.Options{Nodes: 1, Flags: loadFlags(100)})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	toks := mintTokens(ctx, t, cl.Nodes[0].Addr(), mailboxes+mailboxes*perMailbox/wire.SendsPerToken+10)
	c, err := protocol.Dial(ctx, cl.Nodes[0].Addr(), clientOptions)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var mbs []*protocol.Mailbox
	for i := range mailboxes {
		mb, err := c.CreateMailbox(ctx, toks[i])
		if err != nil {
			t.Fatal(err)
		}
		mbs = append(mbs, mb)
	}
	toks = toks[mailboxes:]
	size := func() int64 {
		conn, err := pgx.Connect(ctx, cl.Store)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var n int64
		if err := conn.QueryRow(ctx, `SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = current_schema() AND c.relkind = 'r'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := size()
	next := 0
	for i := range mailboxes * perMailbox {
		id := protocol.NewMessageID()
		env := loadkit.Encode(0, i%mailboxes, i, 0, id)
		_, spent, err := c.SendPaid(ctx, mbs[i%mailboxes].SendID, id, env, toks[next])
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		if spent {
			next++
		}
	}
	after := size()
	n := mailboxes * perMailbox
	fmt.Printf("cluster-bytes: messages=%d envelope_bytes=%d pg_bytes_per_msg=%.0f (relations %d → %d bytes)\n",
		n, loadkit.EnvelopeSize, float64(after-before)/float64(n), before, after)
	if after <= before {
		t.Errorf("the store's relations did not grow (%d → %d) with %d queued messages", before, after, n)
	}
}
