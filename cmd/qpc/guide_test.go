package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// guideBlock is one fenced block of the user guide's quick start: whose
// terminal it is typed in, and its lines.
type guideBlock struct {
	who   string
	lines []string
}

// guideBlocks reads the ```sh <who> blocks of docs/user-guide.md, in order.
func guideBlocks(t *testing.T) []guideBlock {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "user-guide.md"))
	if err != nil {
		t.Fatal(err)
	}
	var blocks []guideBlock
	var cur *guideBlock
	for line := range strings.Lines(string(b)) {
		line = strings.TrimRight(line, "\n")
		switch {
		case cur == nil && strings.HasPrefix(line, "```sh "):
			blocks = append(blocks, guideBlock{who: strings.TrimPrefix(line, "```sh ")})
			cur = &blocks[len(blocks)-1]
		case cur != nil && line == "```":
			cur = nil
		case cur != nil && strings.TrimSpace(line) != "":
			cur.lines = append(cur.lines, line)
		}
	}
	if len(blocks) == 0 {
		t.Fatal("the user guide has no ```sh <who> blocks")
	}
	return blocks
}

// TestUserGuideWalkthrough is the newcomer's walk-through (issue 24): the
// quick start of docs/user-guide.md, run command by command as written,
// with the real qpc-server and qpc binaries on PATH. The operator's
// invite is the only thing passed from the server to alice and bob (it
// takes the place of the example invite in the guide). Each command must
// succeed; both `contact add` print the same safety number; each `recv`
// shows what was sent to it; in `qpc chat` (tmux) a typed line reaches the
// other screen both ways. Secrets come from QPC_PASSPHRASE/QPC_PASSWORD,
// as the guide says they may; the server listens on a free port through
// QPC_LISTEN, the admin and tile listeners are off.
func TestUserGuideWalkthrough(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil && (os.Getenv("CI") == "true" || os.Getenv("QPC_CI") != "") {
		t.Fatal("tmux is not installed: the walk-through ends in qpc chat")
	}
	dir := t.TempDir()
	qpc := buildQPC(t, dir) // skips under -short, or without tmux outside CI
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, src := range map[string]string{"qpc": qpc, "qpc-server": serverBinary} {
		if err := os.Symlink(src, filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := l.LocalAddr().String()
	l.Close()

	home := filepath.Join(dir, "home")
	env := func(who string) []string {
		e := append(cleanEnv(), "HOME="+home, "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
		if who == "operator" {
			return append(e, "QPC_LISTEN="+listen, "QPC_ADMIN_LISTEN=off", "QPC_KT_LISTEN=off", "QPC_LOG_LEVEL=warn")
		}
		return append(e, "QPC_PASSPHRASE=passphrase of "+who, "QPC_PASSWORD=password of "+who)
	}
	workdir := map[string]string{}
	exports := map[string][]string{}
	var inviteText string
	safety := map[string]string{}
	sent := map[string][]string{} // recipient -> "sender: text" not yet received
	var chats []string
	tm := startTmux(t, dir)
	exampleInvite := regexp.MustCompile(`qpc1:\S+`)
	sendLine := regexp.MustCompile(`^qpc send (\S+) '([^']*)'`)
	safetyLine := regexp.MustCompile(`safety number: ([0-9 ]+)`)

	for _, blk := range guideBlocks(t) {
		who := blk.who
		if workdir[who] == "" {
			workdir[who] = filepath.Join(dir, who)
			if err := os.MkdirAll(workdir[who], 0o700); err != nil {
				t.Fatal(err)
			}
		}
		for _, line := range blk.lines {
			cmdline := strings.TrimSpace(strings.SplitN(line, "#", 2)[0])
			if strings.HasPrefix(cmdline, "export ") {
				exports[who] = append(exports[who], cmdline)
				continue
			}
			if exampleInvite.MatchString(cmdline) {
				if inviteText == "" {
					t.Fatalf("%s: %q uses the invite before the operator printed one", who, line)
				}
				cmdline = exampleInvite.ReplaceAllLiteralString(cmdline, shellQuote(inviteText))
			}
			script := strings.Join(append(append([]string{}, exports[who]...), cmdline), "\n")
			switch {
			case cmdline == "qpc-server run" || cmdline == "qpc-server":
				guideServer(t, script, workdir[who], env(who))
				continue
			case cmdline == "qpc chat":
				shell := fmt.Sprintf("cd %s && %s; echo \"qpc chat exited $?\"; sleep 3600", shellQuote(workdir[who]), script)
				var e []string
				for _, kv := range env(who) {
					e = append(e, shellQuote(kv))
				}
				tm.run("new-session", "-d", "-s", who, "-x", "160", "-y", "40", "env "+strings.Join(e, " ")+" bash -c "+shellQuote(shell))
				chats = append(chats, who)
				continue
			}
			cmd := exec.Command("bash", "-e", "-c", script)
			cmd.Dir, cmd.Env = workdir[who], env(who)
			out, err := cmd.CombinedOutput()
			t.Logf("%s$ %s\n%s", who, line, out)
			if err != nil {
				t.Fatalf("%s: %s: %v\n%s", who, line, err, out)
			}
			switch {
			case cmdline == "qpc-server invite":
				inviteText = strings.TrimSpace(string(out))
				if !strings.HasPrefix(inviteText, "qpc1:") || strings.Contains(inviteText, "\n") {
					t.Fatalf("qpc-server invite printed %q, not one invite", out)
				}
			case strings.HasPrefix(cmdline, "qpc contact add "):
				m := safetyLine.FindStringSubmatch(string(out))
				if m == nil {
					t.Fatalf("%s: no safety number in\n%s", who, out)
				}
				safety[who] = m[1]
			case cmdline == "qpc recv":
				for _, want := range sent[who] {
					if !strings.Contains(string(out), want) {
						t.Fatalf("%s's qpc recv does not show %q:\n%s", who, want, out)
					}
				}
				sent[who] = nil
			}
			if m := sendLine.FindStringSubmatch(cmdline); m != nil {
				sent[m[1]] = append(sent[m[1]], who+": "+m[2])
			}
		}
	}
	if len(safety) != 2 {
		t.Fatalf("the walk-through adds %d contacts, want 2 (each person the other)", len(safety))
	}
	if safety["alice"] != safety["bob"] || safety["alice"] == "" {
		t.Fatalf("safety numbers differ: %v", safety)
	}
	if len(chats) != 2 {
		t.Fatalf("the walk-through opens qpc chat for %v, want both people", chats)
	}
	a, b := chats[0], chats[1]
	for _, who := range chats {
		tm.waitFor(who, "connected to ", 90*time.Second)
	}
	for _, turn := range [][2]string{{a, b}, {b, a}} {
		text := "typed in the chat by " + turn[0]
		tm.run("send-keys", "-t", turn[0], "-l", text)
		tm.run("send-keys", "-t", turn[0], "Enter")
		tm.waitFor(turn[1], turn[0]+": "+text, 30*time.Second)
		tm.waitFor(turn[0], turn[0]+": "+text+" (sent)", 30*time.Second)
	}
	for _, who := range chats {
		tm.run("send-keys", "-t", who, "Escape")
		tm.waitFor(who, "qpc chat exited 0", 30*time.Second)
	}
}

// guideServer starts the operator's server line and waits for its
// address line: from then on, the guide's next commands may use it.
func guideServer(t *testing.T, script, dir string, env []string) {
	t.Helper()
	cmd := exec.Command("bash", "-e", "-c", "exec "+script)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
	})
	lines := make(chan string, 100)
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		cmd.Wait()
		logf.Close()
	}()
	deadline := time.After(60 * time.Second)
	for {
		select {
		case l := <-lines:
			if strings.HasPrefix(l, "address: ") {
				return
			}
		case <-done:
			log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			t.Fatalf("qpc-server exited before printing its address:\n%s", log)
		case <-deadline:
			t.Fatal("qpc-server printed no address in 60 s")
		}
	}
}
