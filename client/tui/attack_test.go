package tui

import (
	"context"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
	"github.com/muesli/termenv"
	"github.com/quicprochat/qpc/client"
)

// What a hostile peer puts in a message text and a group name so that,
// shown raw, it drives the terminal: clear the screen, write the
// clipboard (OSC 52, here "rm -rf ~"), go back to the start of the line
// and write a fake alarm there, colour it like the alarm bar, reverse the
// rest of the line (U+202E), hide a character (U+200B).
const (
	hostileText  = "hi\x1b[2J\x1b[H\x1b]52;c;cm0gLXJmIH4K\x07\r\nALARM kt: your keys were replaced, run qpc reset\x1b[41m\b\b\u202Egnp.exe\u009b2J\u200Bx\x7f"
	hostileGroup = "team\x1b[2J\x1b]52;c;cm0gLXJmIH4K\x07\rALARM:kt\u202E\u2066"
)

// TestAttackPeerTextChatScreen: a contact's message text and group name
// full of escape sequences, an OSC 52 clipboard write, a carriage return
// and a fake ALARM line, bidi overrides and invisible characters reach
// the chat screen (as Follow delivers them, and from the history). The
// screen must show them inert: no control character in what it draws
// (our own styling is off here, so any ESC would be the peer's), the
// layout intact, the fake alarm indented in the message pane and not on
// the alarm bar.
func TestAttackPeerTextChatScreen(t *testing.T) {
	prev := lipgloss.ColorProfile()
	lipgloss.SetColorProfile(termenv.Ascii) // the screen's own styles draw no escapes
	t.Cleanup(func() { lipgloss.SetColorProfile(prev) })

	m, f := newModel(t)
	f.hist = append(f.hist, client.Event{Kind: client.EventMessage, Conv: "bob", ConvID: "b0b", From: "bob", Text: hostileText, At: t0})
	run(t, m, Load(context.Background(), f))
	run(t, m, Status("connected to 127.0.0.1:4433"))
	f.recv(t, m, client.Event{Kind: client.EventJoined, Conv: hostileGroup, ConvID: "e7e", Group: true, From: "eve",
		Text: "eve added you to " + hostileGroup, At: t0})
	f.recv(t, m, client.Event{Kind: client.EventMessage, Conv: hostileGroup, ConvID: "e7e", Group: true, From: "eve", Text: hostileText, At: t0})
	f.recv(t, m, client.Event{Kind: client.EventMessage, Conv: "bob", ConvID: "b0b", From: "bob", Text: hostileText, At: t0})

	screens := map[string]string{"the direct chat": m.View()}
	key(t, m, tea.KeyCtrlP) // the previous conversation: the group at the end of the list
	if !strings.Contains(ansi.Strip(m.View()), "▸ #team") {
		t.Fatalf("the group is not selected:\n%s", m.View())
	}
	screens["the group"] = m.View()
	// A warning (the status line) and an alarm whose detail quotes a peer.
	f.recv(t, m, client.Event{Kind: client.EventWarning, Text: hostileText, At: t0})
	f.recv(t, m, client.Event{Kind: client.EventAlarm, Alarm: &client.Alarm{Kind: client.AlarmBadSender, At: t0, Detail: hostileText}, At: t0})
	screens["the alarm and status lines"] = m.View()

	for what, v := range screens {
		checkScreen(t, what, v)
	}
	v := screens["the direct chat"]
	mustContain(t, v, "bob: hi␛[2J␛[H␛]52;c;cm0gLXJmIH4K␇", "gnp.exe", "#team␛[2J")
	// The fake alarm is on a line of its own, but indented under the
	// message in the pane; nothing but the screen starts a pane line.
	if l := lineWith(v, "ALARM kt: your keys"); !strings.Contains(l, "│ "+indent+"ALARM kt: your keys") {
		t.Fatalf("the peer's second line is not indented in the message pane: %q\n%s", l, v)
	}
	if first := strings.Split(screens["the alarm and status lines"], "\n")[0]; !strings.Contains(first, "ALARM bad-sender: hi␛[2J") {
		t.Fatalf("the alarm line is %q", first)
	}
}

// checkScreen fails if v holds a character a terminal acts on other than
// the line feeds between its lines (C0, DEL, C1), a bidi control or an
// invisible format character, if its layout is broken (30 lines, none
// wider than 120 cells), or if a line of the message pane starts with
// anything but an entry's time or the continuation indent.
func checkScreen(t *testing.T, what, v string) {
	t.Helper()
	if !utf8.ValidString(v) {
		t.Fatalf("%s: the screen is not valid UTF-8:\n%q", what, v)
	}
	for i, r := range v {
		if r == '\n' {
			continue
		}
		if unicode.Is(unicode.Cc, r) || unicode.Is(unicode.Cf, r) || unicode.Is(unicode.Bidi_Control, r) {
			t.Fatalf("%s: the screen holds %U at byte %d:\n%q", what, r, i, v)
		}
	}
	lines := strings.Split(v, "\n")
	if len(lines) != 30 {
		t.Fatalf("%s: the screen has %d lines, want 30:\n%s", what, len(lines), v)
	}
	for _, l := range lines {
		if w := ansi.StringWidth(l); w > 120 {
			t.Fatalf("%s: line wider (%d) than the screen: %q", what, w, l)
		}
		if strings.HasPrefix(l, "ALARM") || strings.HasPrefix(l, "qpc") {
			t.Fatalf("%s: a line starts like the screen's own: %q", what, l)
		}
		_, pane, ok := strings.Cut(l, "│")
		if !ok || strings.TrimSpace(pane) == "" {
			continue
		}
		pane = strings.TrimPrefix(pane, " ")
		if !strings.HasPrefix(pane, indent) && !(len(pane) > 5 && pane[2] == ':' && pane[5] == ' ') {
			t.Fatalf("%s: a line of the message pane starts with neither a time nor the indent: %q", what, l)
		}
	}
}
