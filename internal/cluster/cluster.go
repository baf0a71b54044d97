package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quicprochat/qpc/internal/loadtest/loadkit"
	"github.com/quicprochat/qpc/internal/pgtest"
)

// StoreBolt in Options.Store runs every node on bbolt files of its own.
const StoreBolt = "bbolt"

// sharedKeys are the files of the first node's data directory copied to
// the others: the server key (the pin in the address), the OPAQUE key
// (logins), the token master secret (tokens minted through one node are
// spent through another) and the KT keys (when KT runs). Nodes on one
// PostgreSQL database refuse to start with another key set (ADR 0039).
var sharedKeys = []string{"tls.key", "opaque.key", "tokens.key", "kt-note.key", "kt-vrf.key"}

// Options configures a cluster.
type Options struct {
	// Nodes is how many qpc-server processes run; 3 when zero.
	Nodes int
	// Store is the nodes' store setting: empty for a fresh PostgreSQL
	// namespace of internal/pgtest shared by all nodes, StoreBolt for
	// bbolt files of each node's own, or a postgres:// URL.
	Store string
	// Flags are extra qpc-server run flags for every node.
	Flags []string
	// NodeFlags, when set, gives extra flags for node i.
	NodeFlags func(i int) []string
}

// Cluster is a set of running nodes.
type Cluster struct {
	// Store is the store setting every node runs with.
	Store string
	// Nodes are the nodes in start order; node 0 made the shared keys.
	Nodes []*Node
}

// Node is one qpc-server process (or its data directory and ports while
// it is killed).
type Node struct {
	Index  int
	Dir    string // data directory
	Listen string // UDP host:port clients dial, kept across restarts
	Admin  string // TCP host:port of /healthz, /readyz, /metrics
	KT     string // TCP host:port of the KT log's tiles
	bin    string // the qpc-server binary
	args   []string

	mu   sync.Mutex
	addr string // qpc:// address, once printed
	proc *loadkit.Proc
	// Starts counts the processes started on this node.
	starts int
}

// Start runs o.Nodes nodes on one store and returns once every node
// printed its address. The nodes are stopped (SIGTERM, then SIGKILL) when
// t ends.
func Start(t testing.TB, o Options) *Cluster {
	t.Helper()
	if o.Nodes <= 0 {
		o.Nodes = 3
	}
	bin := loadkit.ServerBinary(t)
	store := o.Store
	if store == "" {
		store = pgtest.DB(t)
	}
	c := &Cluster{Store: store}
	for i := range o.Nodes {
		n := &Node{
			Index:  i,
			Dir:    filepath.Join(t.TempDir(), fmt.Sprintf("node%d", i)),
			Listen: freePort(t, "udp"),
			Admin:  freePort(t, "tcp"),
			KT:     freePort(t, "tcp"),
			bin:    bin,
		}
		if err := os.MkdirAll(n.Dir, 0o700); err != nil {
			t.Fatal(err)
		}
		n.args = append([]string{"run",
			"--data-dir", n.Dir,
			"--store", store,
			"--listen", n.Listen,
			"--admin-listen", n.Admin,
			"--kt-listen", n.KT,
			"--log-level", "warn",
		}, o.Flags...)
		if o.NodeFlags != nil {
			n.args = append(n.args, o.NodeFlags(i)...)
		}
		c.Nodes = append(c.Nodes, n)
	}
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, n := range c.Nodes {
			wg.Add(1)
			go func() { defer wg.Done(); n.stop() }()
		}
		wg.Wait()
	})
	// The first node makes the keys; the others get copies, then all but
	// the first start in parallel.
	c.Nodes[0].start(t)
	for _, n := range c.Nodes[1:] {
		for _, f := range sharedKeys {
			b, err := os.ReadFile(filepath.Join(c.Nodes[0].Dir, f))
			if errors.Is(err, fs.ErrNotExist) && strings.HasPrefix(f, "kt-") {
				continue // KT is off
			}
			if err != nil {
				t.Fatalf("cluster: the first node's %s: %v", f, err)
			}
			if err := os.WriteFile(filepath.Join(n.Dir, f), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, len(c.Nodes))
	for i, n := range c.Nodes[1:] {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i+1] = n.launch() }()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// Address is the server's one address listing every node as an endpoint
// (qpc://<pin>@host1:port1,host2:port2,...), in node order: what an
// operator gives clients, which dial its endpoints in a random order and
// move to another when one fails.
func (c *Cluster) Address() string {
	pin, _, _ := strings.Cut(c.Nodes[0].Addr(), "@")
	hosts := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		_, hosts[i], _ = strings.Cut(n.Addr(), "@")
	}
	return pin + "@" + strings.Join(hosts, ",")
}

// NodeOf returns the index of the node listening on endpoint (host:port,
// as protocol.Conn.Endpoint gives it), or -1.
func (c *Cluster) NodeOf(endpoint string) int {
	for i, n := range c.Nodes {
		if n.Listen == endpoint {
			return i
		}
	}
	return -1
}

// Addrs returns every node's qpc:// address, in node order.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr()
	}
	return out
}

// KTPin is what `qpc-server kt-vkey` prints for node 0's data directory
// and flags: the KT log's verifier key, VRF key and configuration hash
// that clients pin (protocol.ParseKTPin). Every node shares them.
func (c *Cluster) KTPin(t testing.TB) string {
	t.Helper()
	args := append([]string{"kt-vkey"}, c.Nodes[0].args[1:]...)
	out, err := exec.Command(loadkit.ServerBinary(t), args...).Output()
	if err != nil {
		t.Fatalf("cluster: qpc-server kt-vkey: %v", err)
	}
	return string(out)
}

// KTURL is the base URL of node i's KT log tiles (kt_listen with the
// default kt_prefix /kt), for an auditor (kt/audit.HTTPLog).
func (n *Node) KTURL() string { return "http://" + n.KT + "/kt" }

// Kill ends node i with SIGKILL (kill -9: no shutdown, no flush) and
// waits until the process is gone.
func (c *Cluster) Kill(t testing.TB, i int) {
	t.Helper()
	n := c.Nodes[i]
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p == nil {
		t.Fatalf("cluster: node %d is not running", i)
	}
	syscall.Kill(-p.Pid(), syscall.SIGKILL)
	select {
	case <-p.Done:
	case <-time.After(30 * time.Second):
		t.Fatalf("cluster: node %d did not die of SIGKILL in 30 s", i)
	}
}

// Restart starts node i again on its data directory and ports, after
// Kill or a crash, and waits for its address line.
func (c *Cluster) Restart(t testing.TB, i int) {
	t.Helper()
	n := c.Nodes[i]
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p != nil {
		select {
		case <-p.Done:
		default:
			t.Fatalf("cluster: node %d is still running", i)
		}
	}
	n.start(t)
}

// Addr is the node's qpc:// address (the same across restarts).
func (n *Node) Addr() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.addr
}

// Running reports whether the node's process is alive.
func (n *Node) Running() bool {
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p == nil {
		return false
	}
	select {
	case <-p.Done:
		return false
	default:
		return true
	}
}

// Pid is the node's current process ID, 0 when it does not run.
func (n *Node) Pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc == nil {
		return 0
	}
	return n.proc.Pid()
}

// Logs is what the node's current (or last) process wrote to stderr, up
// to 1 MiB.
func (n *Node) Logs() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc == nil {
		return ""
	}
	return n.proc.Logs.String()
}

// Alive fails t if the node's process has exited.
func (n *Node) Alive(t testing.TB) {
	t.Helper()
	if !n.Running() {
		t.Fatalf("cluster: node %d exited:\n%s", n.Index, n.Logs())
	}
}

func (n *Node) start(t testing.TB) {
	t.Helper()
	if err := n.launch(); err != nil {
		t.Fatal(err)
	}
}

// launch starts the process and waits for its address line.
func (n *Node) launch() error {
	n.mu.Lock()
	first := n.starts == 0
	n.mu.Unlock()
	for attempt := 1; ; attempt++ {
		p, addr, err := loadkit.StartServer(loadkit.ServerCommand(n.bin, n.args...), 90*time.Second)
		if p != nil {
			n.mu.Lock()
			n.proc = p
			n.starts++
			n.addr = addr
			n.mu.Unlock()
		}
		// The ports were free a moment ago; another process (tests run
		// in parallel) may have taken one since. On the first start,
		// before any client knows them, take others; a restart keeps
		// its ports.
		if err != nil && first && attempt < 3 && strings.Contains(err.Error(), "address already in use") {
			n.Listen, n.Admin, n.KT = freePortErr("udp"), freePortErr("tcp"), freePortErr("tcp")
			for i := 0; i+1 < len(n.args); i++ {
				switch n.args[i] {
				case "--listen":
					n.args[i+1] = n.Listen
				case "--admin-listen":
					n.args[i+1] = n.Admin
				case "--kt-listen":
					n.args[i+1] = n.KT
				}
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("cluster: node %d: %w", n.Index, err)
		}
		return nil
	}
}

// stop ends the process with SIGTERM, then SIGKILL after 15 s.
func (n *Node) stop() {
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p != nil {
		p.Stop()
	}
}

// CPU is the node's current process's user plus system CPU time so far
// (utime+stime of /proc/<pid>/stat).
func (n *Node) CPU(t testing.TB) time.Duration {
	t.Helper()
	d, err := loadkit.CPU(n.Pid())
	if err != nil {
		t.Fatalf("cluster: node %d: %v", n.Index, err)
	}
	return d
}

// Metrics scrapes the node's /metrics into series (name with its labels,
// as written) → value.
func (n *Node) Metrics(t testing.TB) map[string]float64 {
	t.Helper()
	m, err := loadkit.Metrics(n.Admin)
	if err != nil {
		t.Fatalf("cluster: node %d: %v", n.Index, err)
	}
	return m
}

// Ready GETs the node's /readyz and returns its status code and body;
// 0 and the error when the admin listener does not answer (the node was
// killed, or is still starting).
func (n *Node) Ready() (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.Admin+"/readyz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(b)
}

// freePort returns a host:port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB, network string) string {
	t.Helper()
	a := freePortErr(network)
	if a == "" {
		t.Fatalf("cluster: no free %s port on 127.0.0.1", network)
	}
	return a
}

// freePortErr is freePort for launch, which has no t: "" when none.
func freePortErr(network string) string {
	if network == "udp" {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return ""
		}
		defer pc.Close()
		return pc.LocalAddr().String()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return ""
	}
	defer l.Close()
	return l.Addr().String()
}
