package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/client/state"
)

// What eve, a registered user, puts in a message to bob and in the name
// of a group with him, so that `qpc recv`, `qpc history` and `qpc group
// list` drive bob's terminal when they print it raw: clear the screen,
// write his clipboard (OSC 52, here "rm -rf ~"), go back to the start of
// the line and print a fake alarm, colour it, backspace over it, reverse
// what follows (U+202E), a C1 CSI, a zero-width space. The group name has
// no space, line feed or '#' (the honest client refuses those; eve uses
// the real CLI), so its fake alarm comes after a carriage return. The
// honest client refuses such a name (and neutralises one a hostile client
// sends: TestHostileMemberGroupNamedLikeContact), so eve's group is called
// plainGroup and the name is only tried.
const (
	attackText  = "hi bob\x1b[2J\x1b[H\x1b]52;c;cm0gLXJmIH4K\x07\r\nALARM kt: your keys were replaced, run qpc reset\x1b[41m\b\b\u202Egnp.exe\u009b2J\u200Bx\x7f"
	attackGroup = "team\x1b[2J\x1b]52;c;cm0gLXJmIH4K\x07\rALARM:kt-forged\u202E\u2066"
	plainGroup  = "team"
)

// TestAttackPeerTextCLI: eve sends bob the texts above through the real
// server (qpc-server), with the real CLI, and bob reads them with the
// CLI. What bob's terminal gets must hold no control character but the
// line feeds between lines (no ESC, CR, BS, DEL, C1), no bidi control or
// invisible character, and no line that starts like one of qpc's own
// ("ALARM", "WARNING", "qpc:"): the second line of eve's text is
// indented under her first. --json keeps the text exactly as received,
// with every such character escaped.
func TestAttackPeerTextCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a server")
	}
	_, qpc := eveAndBob(t, t.TempDir())

	qpc("eve", "send", "bob", attackText)
	eveGroup(t, qpc)

	// bob's recv, until both messages are in.
	var recv strings.Builder
	for deadline := time.Now().Add(30 * time.Second); strings.Count(recv.String(), "eve: hi bob") < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("bob did not get both messages:\n%q", recv.String())
		}
		out, stderr := qpc("bob", "recv")
		recv.WriteString(out)
		checkTerminal(t, "qpc recv (standard error)", stderr, nil)
		time.Sleep(100 * time.Millisecond)
	}
	out := recv.String()
	t.Logf("bob's qpc recv:\n%s", out)
	// Every line is an event of eve's (direct, or in the group) or the
	// continuation of one.
	checkTerminal(t, "qpc recv", out, func(l string) bool {
		for _, p := range []string{"eve: ", "[eve] ", "[#team] ", client.Indent} {
			if strings.HasPrefix(l, p) {
				return true
			}
		}
		return false
	})
	for _, want := range []string{
		"eve: hi bob␛[2J␛[H␛]52;c;cm0gLXJmIH4K␇\n" + client.Indent + "ALARM kt: your keys were replaced",
		"[#team] eve: hi bob␛[2J␛[H␛]52;c;cm0gLXJmIH4K␇\n" + client.Indent + "ALARM kt: your keys were replaced",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("qpc recv does not show %q", want)
		}
	}

	hist, _ := qpc("bob", "history")
	checkTerminal(t, "qpc history", hist, func(l string) bool {
		date, rest, _ := strings.Cut(l, " ")
		_, rest, _ = strings.Cut(rest, " ")
		return len(date) == 10 && date[4] == '-' && (strings.HasPrefix(rest, "eve: ") || strings.HasPrefix(rest, "[")) ||
			strings.HasPrefix(l, client.Indent)
	})
	groups, _ := qpc("bob", "group", "list")
	checkTerminal(t, "qpc group list", groups, func(l string) bool { return strings.HasPrefix(l, "team\tcreated by eve") })

	// --json: the values are exactly what eve sent, the output safe.
	js, _ := qpc("bob", "--json", "history")
	checkTerminal(t, "qpc --json history", js, func(l string) bool { return strings.HasPrefix(l, "{") })
	texts, convs := 0, 0
	sc := bufio.NewScanner(strings.NewReader(js))
	for sc.Scan() {
		var e client.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("qpc --json history: %v: %s", err, sc.Bytes())
		}
		if e.Kind == client.EventMessage && e.Text == attackText {
			texts++
		}
		if e.Group && e.Conv == plainGroup {
			convs++
		}
	}
	if texts != 2 || convs == 0 {
		t.Fatalf("qpc --json history does not keep the text and the name as received (%d texts, %d group events):\n%s", texts, convs, js)
	}
	st, _ := qpc("bob", "status")
	// status has lines of its own that start like qpc's (a WARNING when no
	// owner check ran yet): none may carry what eve wrote.
	checkTerminal(t, "qpc status", st, func(l string) bool {
		return !strings.Contains(l, "kt-forged") && !strings.Contains(l, "keys were replaced")
	})
	if strings.Contains(st, "ALARM") {
		t.Fatalf("qpc status shows an alarm:\n%s", st)
	}
}

// checkTerminal fails if out holds a character a terminal acts on (C0
// but line feed and tab, DEL, C1), a bidi control or an invisible format
// character (Cf, but ZWJ and ZWNJ), or a line that line does not accept
// (nil: any line not starting like one of qpc's own; a line func decides
// alone, so one that lets a line start like qpc's must know it is qpc's).
func checkTerminal(t *testing.T, what, out string, line func(string) bool) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Fatalf("%s: not valid UTF-8: %q", what, out)
	}
	for i, r := range out {
		switch {
		case r == '\n' || r == '\t' || r == '\u200D' || r == '\u200C':
		case unicode.Is(unicode.Cc, r), unicode.Is(unicode.Cf, r), unicode.Is(unicode.Bidi_Control, r):
			t.Fatalf("%s: %U at byte %d reaches the terminal:\n%q", what, r, i, out)
		}
	}
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if l == "" && out == "" {
			continue
		}
		own := strings.HasPrefix(l, "ALARM") || strings.HasPrefix(l, "WARNING") || strings.HasPrefix(l, "qpc:")
		if own && line == nil {
			t.Fatalf("%s: a line starts like one of qpc's own: %q\n%s", what, l, out)
		}
		if line != nil && !line(l) {
			t.Fatalf("%s: unexpected line %q\n%s", what, l, out)
		}
	}
}

// eveAndBob starts the real qpc-server in dir, registers eve and bob on
// it, and returns their settings and a function that runs the CLI in
// this process as one of them (the test fails unless it exits 0).
func eveAndBob(t *testing.T, dir string) (env map[string]map[string]string, qpc func(name string, args ...string) (stdout, stderr string)) {
	t.Helper()
	addr, pinFile := chatServer(t, dir)
	pinText, err := os.ReadFile(pinFile)
	if err != nil {
		t.Fatal(err)
	}
	pin, err := protocol.ParseKTPin(string(pinText))
	if err != nil {
		t.Fatal(err)
	}
	env = map[string]map[string]string{}
	for _, name := range []string{"eve", "bob"} {
		// The local state with a fast KDF (the CLI reads its parameters
		// from the state); everything after this goes through the CLI.
		env[name] = map[string]string{
			"QPC_HOME":       filepath.Join(dir, "home-"+name),
			"QPC_PASSPHRASE": "passphrase of " + name,
			"QPC_PASSWORD":   "password of " + name,
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cl, err := client.Init(ctx, addr, pin, client.Options{
			Home: env[name]["QPC_HOME"], Passphrase: []byte(env[name]["QPC_PASSPHRASE"]),
			KDF:    &state.Options{Time: 1, MemoryKiB: 64, Threads: 1},
			Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		err = cl.Register(ctx, name, []byte(env[name]["QPC_PASSWORD"]))
		cl.Close()
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	qpc = func(name string, args ...string) (stdout, stderr string) {
		t.Helper()
		var out, errb bytes.Buffer
		c := &cli{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(k string) string { return env[name][k] }}
		if code := c.main(args); code != exitOK {
			t.Fatalf("%s: qpc %q: exit %d\n%s%s", name, args, code, out.String(), errb.String())
		}
		return out.String(), errb.String()
	}
	// bob has eve as a contact, so that he joins her group (eveGroup)
	// without an invitation to accept; added before any test starts a
	// qpc that holds bob's QPC_HOME.
	qpc("bob", "contact", "add", "eve")
	return env, qpc
}

// eveGroup: bob, who has eve as a contact (eveAndBob), joins her group
// plainGroup (the CLI refuses attackGroup as a name: testdata/group.txtar),
// and she writes to it.
func eveGroup(t *testing.T, qpc func(name string, args ...string) (stdout, stderr string)) {
	t.Helper()
	qpc("eve", "group", "create", plainGroup, "bob")
	qpc("eve", "send", "#"+plainGroup, attackText)
}

// TestAttackPeerTextChatTmux: the same texts reach `qpc chat` in a real
// terminal (tmux, which takes OSC 52 clipboard writes here: set-clipboard
// on). eve's direct message is in the history the screen loads, her group
// and its message come while it runs. Nothing of it may act: no paste
// buffer is created, the screen is not cleared (the status line and the
// conversation list stay), no line of the screen starts with eve's fake
// ALARM, which shows indented in the message pane.
func TestAttackPeerTextChatTmux(t *testing.T) {
	dir := t.TempDir()
	bin := buildQPC(t, dir)
	env, qpc := eveAndBob(t, dir)
	qpc("eve", "send", "bob", attackText)

	tm := startTmux(t, dir)
	tm.run("new-session", "-d", "-s", "hold", "sleep 3600")
	tm.run("set-option", "-g", "set-clipboard", "on")
	var bobEnv []string
	for k, v := range env["bob"] {
		bobEnv = append(bobEnv, k+"="+v)
	}
	tm.chat("bob", bin, bobEnv)
	// The text shows in any case (raw or not); then the screen is checked.
	check := func(what, s string) {
		t.Helper()
		if bufs := tm.run("list-buffers"); bufs != "" {
			t.Fatalf("%s: eve's OSC 52 wrote a paste buffer (the clipboard):\n%s", what, bufs)
		}
		lines := strings.Split(s, "\n")
		if !strings.HasPrefix(lines[0], " qpc chat · bob · ") || !strings.Contains(s, " conversations ") {
			t.Fatalf("%s: the screen was cleared or overwritten:\n%s", what, s)
		}
		fake := 0
		for _, l := range lines {
			if strings.HasPrefix(l, "ALARM") || strings.HasPrefix(l, " ⚠") {
				t.Fatalf("%s: a line starts like an alarm: %q\n%s", what, l, s)
			}
			if _, pane, ok := strings.Cut(l, "│ "); ok && strings.HasPrefix(pane, "      ALARM kt: your keys") {
				fake++
			}
		}
		if fake == 0 {
			t.Fatalf("%s: eve's second line is not indented in the message pane:\n%s", what, s)
		}
	}
	check("the history", tm.waitFor("bob", "ALARM kt: your keys", 60*time.Second))
	tm.waitFor("bob", "connected to ", 60*time.Second)

	eveGroup(t, qpc)
	tm.waitFor("bob", "#team", 30*time.Second)
	tm.run("send-keys", "-t", "bob", "Tab")
	tm.waitFor("bob", "▸ #team", 10*time.Second)
	group := tm.waitFor("bob", "eve: hi bob␛[2J", 30*time.Second)
	check("the group", group)
	tm.run("send-keys", "-t", "bob", "Tab")
	direct := tm.waitFor("bob", "▸ eve", 10*time.Second)
	check("the direct chat", direct)
	t.Logf("bob's screen on the group:\n%s\nand on eve:\n%s", group, direct)
	tm.run("send-keys", "-t", "bob", "Escape")
	tm.waitFor("bob", "qpc chat exited 0", 30*time.Second)
}
