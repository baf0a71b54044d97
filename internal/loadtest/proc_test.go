package loadtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quicprochat/qpc/internal/loadtest/loadkit"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat;
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// serverProc is one running qpc-server process.
type serverProc struct {
	cmd   *exec.Cmd
	addr  string // qpc:// address
	admin string // host:port of /metrics
	logs  *loadkit.LockedBuffer
	done  chan struct{}
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
	admin := freeTCP(t)
	args := append([]string{"run",
		"--data-dir", t.TempDir(),
		"--listen", "127.0.0.1:0",
		"--admin-listen", admin,
		"--kt-listen", "127.0.0.1:0",
		"--log-level", "warn",
	}, flags...)
	cmd := exec.Command(bin, args...)
	// The server's configuration comes from the flags alone.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "QPC_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := &serverProc{cmd: cmd, admin: admin, logs: &loadkit.LockedBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.logs
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "address: "); ok {
				select {
				case line <- a:
				default:
				}
			}
		}
		io.Copy(io.Discard, out)
	}()
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.stop)
	select {
	case p.addr = <-line:
	case <-p.done:
		t.Fatalf("qpc-server exited before it listened:\n%s", p.logs.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("qpc-server printed no address in 60 s:\n%s", p.logs.String())
	}
	return p
}

// stop ends the server with SIGTERM, then SIGKILL after 15 s.
func (p *serverProc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	syscall.Kill(p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// alive fails the test if the server has exited.
func (p *serverProc) alive(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
		t.Fatalf("qpc-server exited:\n%s", p.logs.String())
	default:
	}
}

// rss returns the server's resident set (VmRSS) and its peak (VmHWM) in
// bytes.
func (p *serverProc) rss(t *testing.T) (rss, hwm int64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
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
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	// The command name (field 2) may hold spaces; count from the ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("parse /proc/<pid>/stat: %q", s)
	}
	return time.Duration(ut+st) * time.Second / clockTicks
}

// metrics scrapes /metrics into series (name with its labels, as written)
// → value.
func (p *serverProc) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.admin+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", l, err)
		}
		out[l[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("metrics: %v", err)
	}
	return out
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
