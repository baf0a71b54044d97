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

	"github.com/quicprochat/qpc/client"
)

// TestChatTmux drives `qpc chat` for real: a real qpc binary and a real
// qpc-server, alice and bob each in a tmux pane of their own; keys typed
// into one pane show up as a message in the other, both ways, with the
// sender's delivery mark; Esc leaves with status 0.
func TestChatTmux(t *testing.T) {
	if testing.Short() {
		t.Skip("builds qpc and runs a server")
	}
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		if os.Getenv("QPC_CI") != "" {
			t.Fatal("tmux is not installed (CI installs it with apt-get)")
		}
		t.Skip("tmux is not installed")
	}
	dir := t.TempDir()

	qpc := filepath.Join(dir, "qpc")
	build := exec.Command("go", "build", "-o", qpc, "github.com/quicprochat/qpc/cmd/qpc")
	build.Env = cleanEnv()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building qpc: %v\n%s", err, out)
	}

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

	// One tmux server of our own (its socket in dir, no configuration).
	sock := filepath.Join(dir, "tmux.sock")
	var tmuxEnv []string
	for _, kv := range cleanEnv() {
		if !strings.HasPrefix(kv, "TMUX") {
			tmuxEnv = append(tmuxEnv, kv)
		}
	}
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(tmux, append([]string{"-S", sock, "-f", "/dev/null"}, args...)...)
		cmd.Env = tmuxEnv
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	t.Cleanup(func() {
		cmd := exec.Command(tmux, "-S", sock, "kill-server")
		cmd.Env = tmuxEnv
		cmd.Run()
	})
	for _, name := range []string{"alice", "bob"} {
		var env []string
		for _, kv := range users[name] {
			if strings.HasPrefix(kv, "QPC_") {
				env = append(env, shellQuote(kv))
			}
		}
		// The pane stays after qpc exits, showing how it ended.
		shell := fmt.Sprintf("env %s %s chat; echo \"qpc chat exited $?\"; sleep 3600", strings.Join(env, " "), shellQuote(qpc))
		run("new-session", "-d", "-s", name, "-x", "160", "-y", "40", shell)
	}
	screen := func(name string) string {
		t.Helper()
		return run("capture-pane", "-p", "-t", name)
	}
	waitFor := func(name, want string, timeout time.Duration) string {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for {
			s := screen(name)
			if strings.Contains(s, want) {
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s's screen does not show %q after %s:\n%s", name, want, timeout, s)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
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

	parsed, err := client.ParseKTPin(string(pin))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := client.WaitTokenKey(ctx, addr, parsed, client.Options{}, 100*time.Millisecond); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
		t.Fatalf("%v\n%s", err, log)
	}
	return addr, pinFile
}
