package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/wire"
	"github.com/rogpeppe/go-internal/testscript"
)

// TestMain lets the test binary run as qpc-server: testscript puts a copy
// named qpc-server first in PATH, for the scripts and for the process
// tests below alike.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){"qpc-server": main})
}

func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata",
		// Scripts run side by side: a server that gets as far as its
		// key-transparency listener takes a free port, not the default
		// 127.0.0.1:4480 another script may hold.
		Setup: func(env *testscript.Env) error {
			env.Setenv("QPC_KT_LISTEN", "127.0.0.1:0")
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			// mode PATH 0700: the file's permission bits are exactly these.
			"mode": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 2 {
					ts.Fatalf("usage: mode path 0700")
				}
				want, err := strconv.ParseUint(args[1], 8, 32)
				ts.Check(err)
				fi, err := os.Stat(ts.MkAbs(args[0]))
				ts.Check(err)
				if got := fi.Mode().Perm(); (got == fs.FileMode(want)) == neg {
					ts.Fatalf("%s has mode %04o, want %s%04o", args[0], got, map[bool]string{true: "not "}[neg], want)
				}
			},
			// capture VAR: set VAR to the last command's stdout, trimmed.
			"capture": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) != 1 {
					ts.Fatalf("usage: capture VAR")
				}
				ts.Setenv(args[0], strings.TrimSpace(ts.ReadFile("stdout")))
			},
		},
	})
}

// syncBuffer collects a process's output while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is a qpc-server process started by a test.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	done           chan struct{} // closed when the process has exited
	err            error         // from Wait, valid after done
}

// start runs qpc-server (the test binary, via PATH) with args and a
// clean QPC_* environment.
func start(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command("qpc-server", args...), done: make(chan struct{})}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "QPC_") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	// Tests run side by side: each admin listener takes a free port
	// (a flag still overrides this).
	p.cmd.Env = append(p.cmd.Env, "QPC_ADMIN_LISTEN=127.0.0.1:0", "QPC_KT_LISTEN=127.0.0.1:0")
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
			t.Logf("killed qpc-server %v; stderr:\n%s", args, p.stderr.String())
		}
	})
	return p
}

var addressLine = regexp.MustCompile(`(?m)^address: (qpc://\S+)$`)

// address waits for the "address: qpc://..." line on stdout.
func (p *proc) address(t *testing.T) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if m := addressLine.FindStringSubmatch(p.stdout.String()); m != nil {
			return m[1]
		}
		select {
		case <-p.done:
			t.Fatalf("qpc-server exited (%v) before printing its address; stderr:\n%s", p.err, p.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("no address line; stdout %q stderr:\n%s", p.stdout.String(), p.stderr.String())
	return ""
}

// exit waits up to d for the process to end and returns its exit code.
func (p *proc) exit(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		t.Fatalf("qpc-server still running after %v; stderr:\n%s", d, p.stderr.String())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
	return 0
}

func (p *proc) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// waitStderr waits until stderr contains s.
func (p *proc) waitStderr(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.stderr.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("stderr never said %q:\n%s", s, p.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func checkMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != want {
		t.Errorf("%s has mode %04o, want %04o", path, fi.Mode().Perm(), want)
	}
}

// TestRunServesAndStops starts `run` on a fresh directory, checks it
// initialised it and answers a request, then stops it with SIGTERM and
// checks the exit and the output.
func TestRunServesAndStops(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	p := start(t, "run", "--data-dir", dir, "--listen", "127.0.0.1:0", "--shutdown-timeout", "5s")
	addr := p.address(t)

	// run initialised the fresh directory as init would.
	checkMode(t, dir, 0o700)
	checkMode(t, filepath.Join(dir, "tls.key"), 0o600)
	checkMode(t, filepath.Join(dir, "qpc-server.toml"), 0o600)
	checkMode(t, filepath.Join(dir, "qpc.db"), 0o600)
	checkMode(t, filepath.Join(dir, "tokens.key"), 0o600)
	checkMode(t, filepath.Join(dir, "opaque.key"), 0o600)
	checkMode(t, filepath.Join(dir, "accounts.db"), 0o600)
	a, err := wire.ParseAddress(addr)
	if err != nil {
		t.Fatal(err)
	}
	if host, port, _ := net.SplitHostPort(a.Host); host != "127.0.0.1" || port == "0" {
		t.Errorf("address %s: want 127.0.0.1 and the bound port", addr)
	}
	out, err := exec.Command("qpc-server", "address", "--data-dir", dir).Output()
	if err != nil {
		t.Fatal(err)
	}
	if stored, err := wire.ParseAddress(strings.TrimSpace(string(out))); err != nil || stored.Pin != a.Pin {
		t.Errorf("run announced %s, address prints %s (%v)", addr, out, err)
	}

	// The round a client plays against this server, and that none of
	// its identifiers reaches the log, is internal/e2e's TestRunServesRound
	// (server.Run, which this command calls).
	checkHealth(t, addr)

	began := time.Now()
	p.signal(t, syscall.SIGTERM)
	if code := p.exit(t, 5*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM; stderr:\n%s", code, p.stderr.String())
	}
	t.Logf("stopped %v after SIGTERM", time.Since(began))
	stderr, stdout := p.stderr.String(), p.stdout.String()
	for _, want := range []string{"level=INFO", "shutting down", "signal=terminated", "stopped"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Count(stdout, "\n") != 1 {
		t.Errorf("stdout should be the address line only: %q", stdout)
	}
}

// hello connects to the server over QUIC with wire alone (the binary's
// tests play the protocol, not the client SDK) and completes the version
// handshake; it returns the connection and the announced padding policy.
func hello(t *testing.T, ctx context.Context, addr string) (*quic.Conn, padding.Policy) {
	t.Helper()
	a, err := wire.ParseAddress(addr)
	if err != nil {
		t.Fatal(err)
	}
	qc, err := quic.DialAddr(ctx, a.Host, &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{wire.ALPN},
		CurvePreferences:   []tls.CurveID{tls.X25519MLKEM768},
		InsecureSkipVerify: true, // the pin is not what these tests are about
	}, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	hs, err := qc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := wire.WriteMessage(hs, padding.Control, &wire.ClientHello{Versions: []uint16{wire.ProtocolVersion}}); err != nil {
		t.Fatal(err)
	}
	m, err := wire.NewReader(hs, padding.Control).ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	sh, ok := m.(*wire.ServerHello)
	if !ok {
		t.Fatalf("hello answered with %T", m)
	}
	hs.Close()
	return qc, sh.Policy
}

// health sends one Health request on a new stream of qc and checks that
// the server answers it serving.
func health(t *testing.T, ctx context.Context, qc *quic.Conn, policy padding.Policy) {
	t.Helper()
	probe, err := qc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	if err := wire.WriteMessage(probe, policy, &wire.Health{}); err != nil {
		t.Fatal(err)
	}
	m, err := wire.NewReader(probe, policy).ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if hs, ok := m.(*wire.HealthStatus); !ok {
		t.Fatalf("health answered with %T", m)
	} else if hs.Status != wire.StatusServing {
		t.Fatalf("health status %d, want serving", hs.Status)
	}
}

// checkHealth checks that the server at addr answers a Health request.
func checkHealth(t *testing.T, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	qc, policy := hello(t, ctx, addr)
	health(t, ctx, qc, policy)
	qc.CloseWithError(0, "")
}

// stuckRequest connects to the server, completes the hello and leaves a
// request half written, so that a shutdown has a request in flight to
// wait for. It returns once the server has accepted that request's
// stream: a Health request on a later stream has been answered, and
// streams are accepted in order.
func stuckRequest(t *testing.T, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	qc, policy := hello(t, ctx, addr)
	stuck, err := qc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stuck.Write([]byte{byte(wire.KindHealth)}); err != nil {
		t.Fatal(err)
	}
	health(t, ctx, qc, policy)
}

// TestRunSecondSignal: the first signal starts a drain that waits for the
// request in flight; a second one ends the process at once.
func TestRunSecondSignal(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	p := start(t, "run", "--data-dir", dir, "--listen", "127.0.0.1:0", "--shutdown-timeout", "60s")
	stuckRequest(t, p.address(t))

	p.signal(t, syscall.SIGTERM)
	p.waitStderr(t, "shutting down")
	select {
	case <-p.done:
		t.Fatalf("exited without waiting for the request in flight; stderr:\n%s", p.stderr.String())
	case <-time.After(500 * time.Millisecond):
	}
	p.signal(t, syscall.SIGINT)
	if code := p.exit(t, 5*time.Second); code != 1 {
		t.Errorf("exit code %d after a second signal, want 1", code)
	}
	if !strings.Contains(p.stderr.String(), "second signal") {
		t.Errorf("stderr does not explain the forced exit:\n%s", p.stderr.String())
	}
}

// TestRunShutdownTimeout: a request that never finishes holds the
// shutdown for shutdown_timeout, no longer, and the exit is still clean.
func TestRunShutdownTimeout(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	p := start(t, "run", "--data-dir", dir, "--listen", "127.0.0.1:0", "--shutdown-timeout", "1s")
	stuckRequest(t, p.address(t))

	began := time.Now()
	p.signal(t, syscall.SIGINT)
	if code := p.exit(t, 10*time.Second); code != 0 {
		t.Errorf("exit code %d, want 0; stderr:\n%s", code, p.stderr.String())
	}
	if d := time.Since(began); d < 900*time.Millisecond || d > 6*time.Second {
		t.Errorf("stopped %v after the signal; want just over the 1s shutdown timeout, well before the stuck request (which never ends) or the 10 s wait", d)
	}
	for _, want := range []string{"signal=interrupt", "shutdown timed out", "stopped"} {
		if !strings.Contains(p.stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, p.stderr.String())
		}
	}
}

func TestRunPortInUse(t *testing.T) {
	t.Parallel()
	taken, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	p := start(t, "run", "--data-dir", filepath.Join(t.TempDir(), "data"), "--listen", taken.LocalAddr().String())
	if code := p.exit(t, 10*time.Second); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	want := "listen " + taken.LocalAddr().String() + ": address already in use"
	if !strings.Contains(p.stderr.String(), want) {
		t.Errorf("stderr lacks %q:\n%s", want, p.stderr.String())
	}
	if p.stdout.String() != "" {
		t.Errorf("stdout %q: no address should be announced", p.stdout.String())
	}
}

// TestRunStoreLocked: a second server on the same data directory fails
// with a clear message and exit code 1 once the store's lock wait times
// out, and the first keeps serving (internal/e2e's TestRunStoreLocked
// plays the same with a client).
func TestRunStoreLocked(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	first := start(t, "run", "--data-dir", dir, "--listen", "127.0.0.1:0")
	addr := first.address(t)

	second := start(t, "run", "--data-dir", dir, "--listen", "127.0.0.1:0")
	if code := second.exit(t, 30*time.Second); code != 1 {
		t.Errorf("second server: exit code %d, want 1", code)
	}
	if want := "is locked by another process"; !strings.Contains(second.stderr.String(), want) {
		t.Errorf("second server's stderr lacks %q:\n%s", want, second.stderr.String())
	}

	checkHealth(t, addr)
	first.signal(t, syscall.SIGTERM)
	if code := first.exit(t, 15*time.Second); code != 0 {
		t.Errorf("first server: exit code %d", code)
	}
}

func TestDrain(t *testing.T) {
	sigs := make(chan os.Signal, 1)
	release := make(chan struct{})
	stopErr := errors.New("stop result")
	result := make(chan error, 1)
	go func() {
		result <- drain(sigs, func() error { <-release; return stopErr })
	}()
	select {
	case err := <-result:
		t.Fatalf("drain returned %v before stop finished", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-result; err != stopErr {
		t.Errorf("drain = %v, want stop's error", err)
	}

	// A second signal while stop hangs ends the wait at once.
	block := make(chan struct{})
	defer close(block)
	go func() { result <- drain(sigs, func() error { <-block; return nil }) }()
	sigs <- syscall.SIGINT
	select {
	case err := <-result:
		if !errors.Is(err, errForced) {
			t.Errorf("drain = %v, want errForced", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a second signal did not end the drain")
	}
}
