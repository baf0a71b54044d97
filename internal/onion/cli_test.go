package onion

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/internal/tornet"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildOut  []byte
)

// buildServer builds qpc-server once for the tests that run the binary.
func buildServer(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "qpc-onion-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "qpc-server")
		build := exec.Command("go", "build", "-o", binPath, "github.com/quicprochat/qpc/cmd/qpc-server")
		buildOut, buildErr = build.CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("build qpc-server: %v\n%s", buildErr, buildOut)
	}
	return binPath
}

// writeTorrc writes nw's torrc (how a tor joins the private network)
// into dir and returns its path.
func writeTorrc(t *testing.T, nw *tornet.Network, dir string) string {
	t.Helper()
	torrc := filepath.Join(dir, "private-network.torrc")
	if err := os.WriteFile(torrc, []byte(nw.Torrc()), 0o600); err != nil {
		t.Fatal(err)
	}
	return torrc
}

// daemon is a qpc-server process a test started, in a process group of
// its own so that its tor dies with it.
type daemon struct {
	cmd    *exec.Cmd
	name   string        // as the test's messages call it
	waited chan error    // receives Wait's result once it exits
	lines  <-chan string // its stdout, a line at a time
}

// startDaemon starts cmd as a daemon named name; it is killed, group
// and all, when the test ends.
func startDaemon(t *testing.T, name string, cmd *exec.Cmd) *daemon {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{cmd: cmd, name: name, waited: make(chan error, 1)}
	go func() { d.waited <- cmd.Wait() }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-d.waited
	})
	lines := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	d.lines = lines
	return d
}

// stop sends SIGTERM and fails the test unless the daemon exits cleanly
// within 30 s.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.waited:
		d.waited <- err
		if err != nil {
			t.Errorf("%s after SIGTERM: %v", d.name, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not stop within 30 s of SIGTERM", d.name)
	}
}

// TestServerOnionBesideUDP runs qpc-server --onion: the clearnet address
// comes first and works while tor starts; then the onion address, which
// a client reaches through tor.
func TestServerOnionBesideUDP(t *testing.T) {
	nw, socks := network(t)
	bin := buildServer(t)
	dir := t.TempDir()
	torrc := writeTorrc(t, nw, dir)
	srv := startDaemon(t, "qpc-server", exec.Command(bin, "run", "--data-dir", filepath.Join(dir, "data"), "--listen", "127.0.0.1:0",
		"--onion", "--tor-config", torrc, "--admin-listen", "off", "--require-tokens=false", "--log-level", "error"))
	next := func() string {
		t.Helper()
		select {
		case l, ok := <-srv.lines:
			if !ok {
				t.Fatal("qpc-server closed its stdout")
			}
			return l
		case <-time.After(90 * time.Second):
			t.Fatal("no address line from qpc-server within 90 s")
		}
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	clear, ok := strings.CutPrefix(next(), "address: ")
	if !ok || !strings.Contains(clear, "@127.0.0.1:") {
		t.Fatalf("first line %q, want the clearnet address", clear)
	}
	udp, err := protocol.Dial(ctx, clear, protocol.Options{})
	if err != nil {
		t.Fatalf("clearnet dial while tor starts: %v", err)
	}
	defer udp.Close()

	onion, ok := strings.CutPrefix(next(), "onion address: ")
	if !ok || !onionAddrRe.MatchString(onion) {
		t.Fatalf("second line %q, want the onion address", onion)
	}
	// Same key, two routes: a mailbox made over UDP is read over tor.
	mb, err := udp.CreateMailbox(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := protocol.NewMessageID()
	if _, err := udp.Send(ctx, mb.SendID, id, envelope("both ways"), nil); err != nil {
		t.Fatal(err)
	}
	viaTor, err := protocol.Dial(ctx, onion, protocol.Options{Tor: &protocol.TorOptions{SOCKS: socks}})
	if err != nil {
		t.Fatalf("onion dial: %v", err)
	}
	defer viaTor.Close()
	if msgs, _, err := viaTor.Fetch(ctx, mb, 0, 1); err != nil || len(msgs) != 1 || msgs[0].ID != id {
		t.Fatalf("fetch over tor: %d, %v", len(msgs), err)
	}

	srv.stop(t)
	if left := processesUsing(filepath.Join(dir, "data", "tor")); len(left) > 0 {
		time.Sleep(3 * time.Second)
		if left = processesUsing(filepath.Join(dir, "data", "tor")); len(left) > 0 {
			t.Errorf("the server's tor (pids %v) outlived it", left)
		}
	}
}
