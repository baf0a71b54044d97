package loadtest

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quicprochat/qpc/internal/loadtest/loadkit"
)

// serverProc is one running qpc-server process.
type serverProc struct {
	*loadkit.Proc
	addr  string // qpc:// address
	admin string // host:port of /metrics
}

// freeTCP returns a TCP port on 127.0.0.1 that was free a moment ago.
func freeTCP(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startServer runs qpc-server on 127.0.0.1 with tokens required and the
// connection, request-rate and token limits raised for a load test, and
// waits for its address line.
func startServer(t *testing.T, maxConns int) *serverProc {
	t.Helper()
	return startServerFlags(t,
		"--require-tokens=true",
		"--token-quota", "1048576",
		"--max-conns", strconv.Itoa(maxConns),
		"--max-conns-per-addr", strconv.Itoa(maxConns),
		"--max-streams-per-addr", strconv.Itoa(100*maxConns),
		"--max-streams-total", strconv.Itoa(100*maxConns),
		// The one token-minting connection issues hundreds of batches in
		// a row; the senders stay far below the default rate anyway.
		"--request-rate", "100000",
		"--request-burst", "100000",
	)
}

// startServerFlags runs qpc-server on 127.0.0.1 with a fresh data
// directory, its defaults and the given flags, and waits for its address
// line.
func startServerFlags(t *testing.T, flags ...string) *serverProc {
	t.Helper()
	bin := loadkit.ServerBinary(t)
	for attempt := 1; ; attempt++ {
		admin := freeTCP(t)
		args := append([]string{"run",
			"--data-dir", t.TempDir(),
			"--listen", "127.0.0.1:0",
			"--admin-listen", admin,
			"--kt-listen", "127.0.0.1:0",
			"--log-level", "warn",
		}, flags...)
		proc, addr, err := loadkit.StartServer(loadkit.ServerCommand(bin, args...), 60*time.Second)
		if proc != nil {
			t.Cleanup(proc.Stop)
		}
		// The admin port was free a moment ago: another process (tests
		// run in parallel) may have taken it since. Another one, then.
		if err != nil && attempt < 3 && strings.Contains(err.Error(), "address already in use") {
			t.Logf("admin port %s taken before qpc-server bound it; trying another", admin)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return &serverProc{Proc: proc, addr: addr, admin: admin}
	}
}

// alive fails the test if the server has exited.
func (p *serverProc) alive(t *testing.T) {
	t.Helper()
	select {
	case <-p.Done:
		t.Fatalf("qpc-server exited:\n%s", p.Logs.String())
	default:
	}
}

// rss returns the server's resident set (VmRSS) and its peak (VmHWM) in
// bytes.
func (p *serverProc) rss(t *testing.T) (rss, hwm int64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) != 3 || f[2] != "kB" {
			continue
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		switch f[0] {
		case "VmRSS:":
			rss = n << 10
		case "VmHWM:":
			hwm = n << 10
		}
	}
	if rss == 0 {
		t.Fatal("no VmRSS in /proc/<pid>/status")
	}
	return rss, hwm
}

// cpu returns the server's user plus system CPU time so far.
func (p *serverProc) cpu(t *testing.T) time.Duration {
	t.Helper()
	d, err := loadkit.CPU(p.Pid())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// metrics scrapes /metrics into series (name with its labels, as written)
// → value.
func (p *serverProc) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	m, err := loadkit.Metrics(p.admin)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// openConns reads qpc_connections_open (all transports) from /metrics.
func (p *serverProc) openConns(t *testing.T) int {
	t.Helper()
	sum, found := 0.0, false
	for k, v := range p.metrics(t) {
		if strings.HasPrefix(k, "qpc_connections_open") {
			sum, found = sum+v, true
		}
	}
	if !found {
		t.Fatal("no qpc_connections_open in /metrics")
	}
	return int(sum)
}

// meanDelta is (sum1-sum0)/(count1-count0) of a histogram or summary
// series between two scrapes: the mean of what was observed in between.
func meanDelta(m0, m1 map[string]float64, name, labels string) float64 {
	sum, count := name+"_sum"+labels, name+"_count"+labels
	n := m1[count] - m0[count]
	if n <= 0 {
		return 0
	}
	return (m1[sum] - m0[sum]) / n
}
