package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
)

// TestChatTmux drives `qpc chat` for real: a real qpc binary and a real
// qpc-server, alice and bob each in a tmux pane of their own; keys typed
// into one pane show up as a message in the other, both ways, with the
// sender's delivery mark; Esc leaves with status 0.
func TestChatTmux(t *testing.T) {
	dir := t.TempDir()
	qpc := buildQPC(t, dir)
	addr, pinFile := chatServer(t, dir)

	users := map[string][]string{}
	for _, name := range []string{"alice", "bob"} {
		users[name] = append(cleanEnv(),
			"QPC_HOME="+filepath.Join(dir, "home-"+name),
			"QPC_PASSPHRASE=passphrase of "+name,
			"QPC_PASSWORD=password of "+name)
	}
	cli := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(qpc, args...)
		cmd.Env = users[name]
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: qpc %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	for _, name := range []string{"alice", "bob"} {
		cli(name, "init", "--server", addr, "--kt", "@"+pinFile)
		cli(name, "register", name)
	}
	cli("alice", "send", "bob", "first contact")
	if out := cli("bob", "recv"); !strings.Contains(out, "alice: first contact") {
		t.Fatalf("bob did not get the first message:\n%s", out)
	}

	tm := startTmux(t, dir)
	for _, name := range []string{"alice", "bob"} {
		tm.chat(name, qpc, users[name])
	}
	run, waitFor := tm.run, tm.waitFor
	typeLine := func(name, text string) {
		t.Helper()
		run("send-keys", "-t", name, "-l", text)
		run("send-keys", "-t", name, "Enter")
	}

	// Both screens come up, connected, on their conversation.
	for _, name := range []string{"alice", "bob"} {
		s := waitFor(name, "connected to ", 90*time.Second)
		peer := map[string]string{"alice": "bob", "bob": "alice"}[name]
		if !strings.Contains(s, "▸ "+peer) {
			t.Fatalf("%s's screen has not selected the conversation with %s:\n%s", name, peer, s)
		}
	}
	waitFor("alice", "alice: first contact (sent)", 10*time.Second)
	waitFor("bob", "alice: first contact", 10*time.Second)

	typeLine("alice", "hello from the alice pane")
	waitFor("bob", "alice: hello from the alice pane", 30*time.Second)
	waitFor("alice", "alice: hello from the alice pane (sent)", 30*time.Second)

	typeLine("bob", "and hello back from bob")
	s := waitFor("alice", "bob: and hello back from bob", 30*time.Second)
	b := waitFor("bob", "bob: and hello back from bob (sent)", 30*time.Second)
	t.Logf("alice's screen:\n%s\nbob's screen:\n%s", s, b)
	// alice's own line is still marked; the order is kept.
	if i, j := strings.Index(s, "hello from the alice pane"), strings.Index(s, "and hello back from bob"); i < 0 || j < i {
		t.Fatalf("alice's screen is out of order:\n%s", s)
	}

	// Esc leaves cleanly and gives the terminal back.
	for _, name := range []string{"alice", "bob"} {
		run("send-keys", "-t", name, "Escape")
		waitFor(name, "qpc chat exited 0", 30*time.Second)
	}
}

// buildQPC builds the qpc binary into dir, or skips the test where that
// cannot run (-short, or no tmux outside CI).
func buildQPC(t *testing.T, dir string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds qpc and runs a server")
	}
	if _, err := exec.LookPath("tmux"); err != nil {
		if os.Getenv("QPC_CI") != "" {
			t.Fatal("tmux is not installed (CI installs it with apt-get)")
		}
		t.Skip("tmux is not installed")
	}
	qpc := filepath.Join(dir, "qpc")
	build := exec.Command("go", "build", "-o", qpc, "github.com/quicprochat/qpc/cmd/qpc")
	build.Env = cleanEnv()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building qpc: %v\n%s", err, out)
	}
	return qpc
}

// tmuxServer is a tmux server of a test's own (its socket in the test's
// directory, no configuration), killed when the test ends.
type tmuxServer struct {
	t    *testing.T
	tmux string
	sock string
	env  []string
}

func startTmux(t *testing.T, dir string) *tmuxServer {
	t.Helper()
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		t.Fatal(err)
	}
	tm := &tmuxServer{t: t, tmux: tmux, sock: filepath.Join(dir, "tmux.sock")}
	for _, kv := range cleanEnv() {
		if !strings.HasPrefix(kv, "TMUX") {
			tm.env = append(tm.env, kv)
		}
	}
	t.Cleanup(func() {
		cmd := exec.Command(tmux, "-S", tm.sock, "kill-server")
		cmd.Env = tm.env
		cmd.Run()
	})
	return tm
}

// run runs a tmux command and returns its output.
func (tm *tmuxServer) run(args ...string) string {
	tm.t.Helper()
	cmd := exec.Command(tm.tmux, append([]string{"-S", tm.sock, "-f", "/dev/null"}, args...)...)
	cmd.Env = tm.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		tm.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// chat starts `qpc chat` in a 160x40 session called name, with the QPC_
// settings of env. The pane stays after qpc exits, showing how it ended.
func (tm *tmuxServer) chat(name, qpc string, env []string) {
	tm.t.Helper()
	var qenv []string
	for _, kv := range env {
		if strings.HasPrefix(kv, "QPC_") {
			qenv = append(qenv, shellQuote(kv))
		}
	}
	shell := fmt.Sprintf("env %s %s chat; echo \"qpc chat exited $?\"; sleep 3600", strings.Join(qenv, " "), shellQuote(qpc))
	tm.run("new-session", "-d", "-s", name, "-x", "160", "-y", "40", shell)
}

// screen is what session name shows, as text.
func (tm *tmuxServer) screen(name string) string {
	tm.t.Helper()
	return tm.run("capture-pane", "-p", "-t", name)
}

// waitFor waits until session name shows want, and returns the screen.
func (tm *tmuxServer) waitFor(name, want string, timeout time.Duration) string {
	tm.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := tm.screen(name)
		if strings.Contains(s, want) {
			return s
		}
		if time.Now().After(deadline) {
			tm.t.Fatalf("%s's screen does not show %q after %s:\n%s", name, want, timeout, s)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// chatServer starts the real qpc-server in dir for a Go test (the
// scripts use serverCmd) and returns its address and the file with its
// key-transparency pin, once it is ready.
func chatServer(t *testing.T, dir string) (addr, pinFile string) {
	t.Helper()
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := l.LocalAddr().String()
	l.Close()
	data := filepath.Join(dir, "server-data")
	query := func(cmd string) []byte {
		c := exec.Command(serverBinary, append([]string{cmd}, serverFlags(data, listen)...)...)
		c.Env = cleanEnv()
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("qpc-server %s: %v\n%s", cmd, err, out)
		}
		return out
	}
	query("init")
	addr = strings.Fields(string(query("address")))[0]
	pin := query("kt-vkey")
	pinFile = filepath.Join(dir, "kt.pin")
	if err := os.WriteFile(pinFile, pin, 0o600); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(serverBinary, append([]string{"run"}, serverFlags(data, listen)...)...)
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logFile.Close(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
	})

	parsed, err := protocol.ParseKTPin(string(pin))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := protocol.WaitTokenKey(ctx, addr, parsed, protocol.Options{}, 100*time.Millisecond); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
		t.Fatalf("%v\n%s", err, log)
	}
	return addr, pinFile
}
