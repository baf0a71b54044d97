package onion

import (
	"bufio"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// onlyServer is a running onion-only qpc-server (the binary).
type onlyServer struct {
	addr   string       // its qpc://…onion address
	cmd    *exec.Cmd    // the process
	exited <-chan error // receives Wait's result once it exits
}

// runOnionOnly starts `<bin> run args...` (an --onion-only qpc-server),
// in a process group of its own so that its tor dies with it, and returns
// it with the qpc://…onion address it prints first. It fails the test if the
// server exits first, prints a clearnet address first, or publishes
// nothing within 2 minutes. The server is killed, and its output drained,
// when the test ends.
func runOnionOnly(t *testing.T, bin string, args ...string) *onlyServer {
	t.Helper()
	srv := exec.Command(bin, append([]string{"run"}, args...)...)
	srv.Env = envWithoutQPC()
	srv.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	srv.Stderr = &testWriter{t: t, prefix: "qpc-server: "}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	waited, scanned := make(chan struct{}), make(chan struct{})
	go func() { exited <- srv.Wait(); close(waited) }()
	// Stop the server (and its tor: same process group) before the test
	// ends, and wait until nothing will log any more.
	t.Cleanup(func() {
		syscall.Kill(-srv.Process.Pid, syscall.SIGKILL)
		<-waited
		<-scanned
	})
	addrs := make(chan string, 4)
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			t.Logf("qpc-server stdout: %s", sc.Text())
			if a, ok := strings.CutPrefix(sc.Text(), "onion address: "); ok {
				addrs <- a
			} else if strings.HasPrefix(sc.Text(), "address: ") {
				addrs <- "CLEARNET " + sc.Text()
			}
		}
	}()
	var addr string
	select {
	case addr = <-addrs:
	case err := <-exited:
		t.Fatalf("qpc-server exited before publishing: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("no onion address from qpc-server within 2 minutes")
	}
	if !onionAddrRe.MatchString(addr) {
		t.Fatalf("onion-only server printed %q first, want only its qpc://…onion address", addr)
	}
	return &onlyServer{addr: addr, cmd: srv, exited: exited}
}
