package tui

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"
	"github.com/quicprochat/qpc/client"
)

// fake is a Messenger whose outbox the test controls. Like the client,
// it keeps read marks (read) across the models that load from it: a
// restart is a new Model loading the same fake.
type fake struct {
	mu      sync.Mutex
	sent    []string // target: text
	err     error    // what SendText returns
	queued  map[string]time.Time
	convs   []client.Conversation
	hist    []client.Event
	alarms  []client.Alarm
	read    map[string]int // conversation ID: how many entries of hist were read
	marked  []string       // the targets of MarkRead, in order
	markErr error          // what MarkRead returns
}

func (f *fake) Handle() string { return "alice" }

// SendText returns the content IDs c1, c2, … (none when the message was
// not recorded).
func (f *fake) SendText(_ context.Context, target, text string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, target+": "+text)
	if f.err != nil && !errors.Is(f.err, client.ErrQueued) {
		return "", f.err
	}
	return fmt.Sprintf("c%d", len(f.sent)), f.err
}

func (f *fake) MarkRead(target string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.marked = append(f.marked, target)
	if f.markErr != nil {
		return f.markErr
	}
	f.read[target] = len(f.hist)
	return nil
}

func (f *fake) Unread() (map[string]int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int{}
	for i, e := range f.hist {
		if e.Kind == client.EventMessage && e.From != "alice" && i >= f.read[e.ConvID] {
			out[e.ConvID]++
		}
	}
	return out, nil
}

// recv records e as the client does when it arrives, and hands it to m.
func (f *fake) recv(t *testing.T, m *Model, e client.Event) string {
	t.Helper()
	f.mu.Lock()
	f.hist = append(f.hist, e)
	f.mu.Unlock()
	return run(t, m, EventMsg(e))
}

func (f *fake) markedSoFar() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.marked...)
}

func (f *fake) Conversations(context.Context) ([]client.Conversation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]client.Conversation(nil), f.convs...), nil
}

func (f *fake) History(string, int) ([]client.Event, error) { return f.hist, nil }
func (f *fake) Alarms() ([]client.Alarm, error)             { return f.alarms, nil }

func (f *fake) QueuedSince() (map[string]time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := map[string]time.Time{}
	for k, v := range f.queued {
		q[k] = v
	}
	return q, nil
}

var t0 = time.Date(2030, 1, 2, 10, 0, 0, 0, time.UTC)

// run applies msg and every command it leads to (not ticks), as the
// program would, and returns the screen as plain text.
func run(t *testing.T, m *Model, msg tea.Msg) string {
	t.Helper()
	queue := []tea.Msg{msg}
	for len(queue) > 0 {
		next := queue[0]
		queue = queue[1:]
		if _, ok := next.(tickMsg); ok {
			continue
		}
		_, cmd := m.Update(next)
		queue = append(queue, exec(cmd)...)
	}
	return ansi.Strip(m.View())
}

func exec(cmd tea.Cmd) []tea.Msg {
	if cmd == nil {
		return nil
	}
	switch msg := cmd().(type) {
	case tea.BatchMsg:
		var out []tea.Msg
		for _, c := range msg {
			out = append(out, exec(c)...)
		}
		return out
	case nil:
		return nil
	default:
		if fmt.Sprintf("%T", msg) == "tea.QuitMsg" {
			return nil
		}
		return []tea.Msg{msg}
	}
}

func typeText(t *testing.T, m *Model, s string) string {
	t.Helper()
	var v string
	for _, r := range s {
		v = run(t, m, tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}})
	}
	return v
}

func key(t *testing.T, m *Model, k tea.KeyType) string {
	t.Helper()
	return run(t, m, tea.KeyMsg{Type: k})
}

func mustContain(t *testing.T, view string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(view, w) {
			t.Fatalf("screen lacks %q:\n%s", w, view)
		}
	}
}

func mustNotContain(t *testing.T, view string, bad ...string) {
	t.Helper()
	for _, w := range bad {
		if strings.Contains(view, w) {
			t.Fatalf("screen shows %q:\n%s", w, view)
		}
	}
}

// lineWith returns the screen line holding s.
func lineWith(view, s string) string {
	for _, l := range strings.Split(view, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

func newModel(t *testing.T) (*Model, *fake) {
	f := &fake{
		convs: []client.Conversation{{ID: "b0b", Name: "bob"}, {ID: "c0ffee", Name: "team", Group: true}},
		hist: []client.Event{
			{Kind: client.EventJoined, Conv: "team", ConvID: "c0ffee", Group: true, Text: "carol added you to team", At: t0},
			{Kind: client.EventMessage, Conv: "bob", ConvID: "b0b", From: "bob", Text: "old hello", At: t0},
			{Kind: client.EventMessage, Conv: "bob", ConvID: "b0b", From: "alice", Text: "old reply", At: t0.Add(time.Minute), ID: "0ld", Status: "sent"},
		},
		queued: map[string]time.Time{},
		read:   map[string]int{"b0b": 3, "c0ffee": 3}, // all of hist
	}
	now := t0.Add(time.Hour)
	m := New(Options{Refresh: time.Millisecond, Now: func() time.Time { now = now.Add(time.Second); return now }})
	run(t, m, tea.WindowSizeMsg{Width: 120, Height: 30})
	return m, f
}

func TestStartAndLayout(t *testing.T) {
	m, f := newModel(t)
	v := ansi.Strip(m.View())
	mustContain(t, v, "opening the local state…")
	f.alarms = []client.Alarm{{Kind: client.AlarmSplitView, At: t0, Detail: "bob saw another checkpoint"}}
	run(t, m, Load(context.Background(), f))
	v = run(t, m, Status("connected to 127.0.0.1:4433"))
	mustContain(t, v, "qpc chat · alice · connected to 127.0.0.1:4433",
		"▸ bob", "  #team", "bob: old hello", "alice: old reply (sent)")
	// The alarm is the first line.
	if first := strings.Split(v, "\n")[0]; !strings.Contains(first, "ALARM split-view: bob saw another checkpoint") {
		t.Fatalf("first line %q is not the alarm:\n%s", first, v)
	}
	// The list is left of the messages.
	l := lineWith(v, "bob: old hello")
	if strings.Index(l, "│") > strings.Index(l, "bob: old hello") {
		t.Fatalf("messages are not right of the list: %q", l)
	}
	if n := len(strings.Split(v, "\n")); n != 30 {
		t.Fatalf("screen has %d lines, want 30", n)
	}
	for _, l := range strings.Split(v, "\n") {
		if w := ansi.StringWidth(l); w > 120 {
			t.Fatalf("line wider (%d) than the screen: %q", w, l)
		}
	}
}

func TestEventsUnreadAndSwitching(t *testing.T) {
	m, f := newModel(t)
	run(t, m, Load(context.Background(), f))
	run(t, m, EventMsg{Kind: client.EventMessage, Conv: "team", ConvID: "c0ffee", Group: true, From: "carol", Text: "meeting at noon", At: t0})
	run(t, m, EventMsg{Kind: client.EventMessage, Conv: "team", ConvID: "c0ffee", Group: true, From: "dave", Text: "ok", At: t0})
	v := run(t, m, EventMsg{Kind: client.EventMessage, Conv: "bob", ConvID: "b0b", From: "bob", Text: "are you there?", At: t0})
	mustContain(t, v, "#team (2)", "bob: are you there?")
	mustNotContain(t, v, "meeting at noon", "bob (")

	v = key(t, m, tea.KeyTab)
	mustContain(t, v, "▸ #team", "carol: meeting at noon", "dave: ok", "carol added you to team")
	mustNotContain(t, v, "(2)", "are you there")
	v = key(t, m, tea.KeyShiftTab)
	mustContain(t, v, "▸ bob")
	v = key(t, m, tea.KeyCtrlN)
	mustContain(t, v, "▸ #team")
	v = key(t, m, tea.KeyCtrlP)
	mustContain(t, v, "▸ bob")

	// A new conversation from someone shows up in the list.
	run(t, m, EventMsg{Kind: client.EventJoined, Conv: "erin", ConvID: "e41", Text: "erin started a conversation with you", At: t0})
	v = run(t, m, EventMsg{Kind: client.EventMessage, Conv: "erin", ConvID: "e41", From: "erin", Text: "hi", At: t0})
	mustContain(t, v, "  erin (1)")
	// Kinds the screen does not know are left out.
	v = run(t, m, EventMsg{Kind: "reaction", Conv: "bob", ConvID: "b0b", Text: "thumbs up"})
	mustNotContain(t, v, "thumbs")
}

func TestAlarmsAndGaps(t *testing.T) {
	m, f := newModel(t)
	run(t, m, Load(context.Background(), f))
	v := ansi.Strip(m.View())
	mustNotContain(t, v, "ALARM")
	v = run(t, m, EventMsg{Kind: client.EventAlarm, Alarm: &client.Alarm{Kind: client.AlarmKT, At: t0, Detail: "a key we did not publish"}, At: t0})
	mustContain(t, strings.Split(v, "\n")[0], "ALARM kt: a key we did not publish")
	v = run(t, m, EventMsg{Kind: client.EventGap, Conv: "bob", ConvID: "b0b", From: "bob", Missed: []uint64{3, 4}, At: t0})
	mustContain(t, v, "gap in bob: 2 message(s) from bob are missing (seq [3 4])", "! 2 message(s) from bob are missing")
	for range 3 {
		v = run(t, m, EventMsg{Kind: client.EventAlarm, Alarm: &client.Alarm{Kind: client.AlarmDropped, At: t0, Detail: "undecryptable"}, At: t0})
	}
	mustContain(t, strings.Split(v, "\n")[0], "5 ALARMS")

	// A warning goes to the status line, not among the alarms.
	v = run(t, m, EventMsg{Kind: client.EventWarning, Text: "cover traffic paused", At: t0})
	mustContain(t, v, "warning: cover traffic paused")
	mustContain(t, strings.Split(v, "\n")[0], "5 ALARMS")
}

func TestSendAndDeliveryState(t *testing.T) {
	m, f := newModel(t)
	run(t, m, Load(context.Background(), f))

	// Sent: the server acknowledged at once.
	typeText(t, m, "hello bob")
	v := key(t, m, tea.KeyEnter)
	mustContain(t, v, "alice: hello bob (sent)")
	if len(f.sent) != 1 || f.sent[0] != "bob: hello bob" {
		t.Fatalf("sent %q", f.sent)
	}

	// Queued: the server was not reached; it stays queued while the
	// outbox holds the conversation's entry, and turns sent after.
	f.err = fmt.Errorf("send: %w", client.ErrQueued)
	f.queued["b0b"] = m.opts.Now()
	typeText(t, m, "are you there")
	v = key(t, m, tea.KeyEnter)
	mustContain(t, v, "alice: are you there (queued)", "alice: hello bob (sent)")
	f.queued = map[string]time.Time{}
	run(t, m, tickMsg{})
	v = run(t, m, m.refresh(false)())
	mustContain(t, v, "alice: are you there (sent)")

	// Failed: said why.
	f.err = client.ErrInactive
	typeText(t, m, "still here?")
	v = key(t, m, tea.KeyEnter)
	mustContain(t, v, "still here? (failed: you are no longer a member")

	// Stored own messages are queued when the outbox is older than them.
	m2, _ := newModel(t)
	f.queued = map[string]time.Time{"b0b": t0.Add(30 * time.Second)}
	v = run(t, m2, Load(context.Background(), f))
	mustContain(t, v, "alice: old reply (queued)")
}

func TestToCommand(t *testing.T) {
	m, f := newModel(t)
	run(t, m, Load(context.Background(), f))
	typeText(t, m, "/to #team")
	v := key(t, m, tea.KeyEnter)
	mustContain(t, v, "▸ #team")
	typeText(t, m, "/to zoe")
	v = key(t, m, tea.KeyEnter)
	mustContain(t, v, "▸ zoe", "new conversation with zoe")
	// The first message starts it; its ID comes from the next listing.
	f.convs = append(f.convs, client.Conversation{ID: "20e", Name: "zoe"})
	typeText(t, m, "hi zoe")
	v = key(t, m, tea.KeyEnter)
	mustContain(t, v, "alice: hi zoe (sent)")
	if got := f.sent[len(f.sent)-1]; got != "zoe: hi zoe" {
		t.Fatalf("sent %q", got)
	}
	if c := m.convs[m.sel]; c.id != "20e" {
		t.Fatalf("zoe's conversation ID %q, want 20e", c.id)
	}
	typeText(t, m, "/nope")
	v = key(t, m, tea.KeyEnter)
	mustContain(t, v, "unknown command /nope")
	// Esc quits.
	if _, cmd := m.Update(tea.KeyMsg{Type: tea.KeyEsc}); cmd == nil || fmt.Sprintf("%T", cmd()) != "tea.QuitMsg" {
		t.Fatal("Esc does not quit")
	}
	if _, cmd := m.Update(tea.KeyMsg{Type: tea.KeyCtrlC}); cmd == nil || fmt.Sprintf("%T", cmd()) != "tea.QuitMsg" {
		t.Fatal("ctrl-c does not quit")
	}
}

func TestBeforeOpenAndFatal(t *testing.T) {
	m := New(Options{Refresh: time.Millisecond})
	typeText(t, m, "early")
	v := key(t, m, tea.KeyEnter)
	mustContain(t, v, "not ready yet")
	want := errors.New("wrong passphrase")
	if _, cmd := m.Update(Fatal{Err: want}); cmd == nil || m.Err() != want {
		t.Fatalf("Fatal: err %v", m.Err())
	}
	m = New(Options{})
	if _, cmd := m.Update(Opened{Err: want}); cmd == nil || m.Err() != want {
		t.Fatalf("Opened with an error: err %v", m.Err())
	}
}

// TestReceiptMarks: our own lines show what the contact's receipts say,
// from History at start and live from EventReceipt, never going back from
// read; our own receipts and groups change nothing.
func TestReceiptMarks(t *testing.T) {
	m, f := newModel(t)
	f.hist = append(f.hist,
		client.Event{Kind: client.EventMessage, Conv: "bob", ConvID: "b0b", From: "alice", Text: "got it?", At: t0.Add(2 * time.Minute), ID: "d1", Status: "delivered"},
		client.Event{Kind: client.EventMessage, Conv: "bob", ConvID: "b0b", From: "alice", Text: "seen it?", At: t0.Add(3 * time.Minute), ID: "r1", Status: "read"},
		client.Event{Kind: client.EventMessage, Conv: "bob", ConvID: "b0b", From: "alice", Text: "not yet", At: t0.Add(4 * time.Minute), ID: "s1", Status: "sent"},
		client.Event{Kind: client.EventMessage, Conv: "team", ConvID: "c0ffee", Group: true, From: "alice", Text: "hi team", At: t0.Add(5 * time.Minute), ID: "g1", Status: "sent"},
	)
	v := run(t, m, Load(context.Background(), f))
	mustContain(t, v, "alice: old reply (sent)", "alice: got it? (delivered)", "alice: seen it? (read)")

	receipt := func(from, status string, ids ...string) string {
		return run(t, m, EventMsg{Kind: client.EventReceipt, Conv: "bob", ConvID: "b0b", From: from, Status: status, IDs: ids,
			Text: from + " " + status + " your messages", At: t0})
	}
	v = receipt("bob", "delivered", "0ld")
	mustContain(t, v, "alice: old reply (delivered)", "alice: got it? (delivered)")
	mustNotContain(t, v, "your messages") // a receipt is no line of its own
	v = receipt("bob", "read", "0ld", "d1")
	mustContain(t, v, "alice: old reply (read)", "alice: got it? (read)")
	// Receipts leave after random delays: a late delivery receipt does not
	// undo the read one.
	v = receipt("bob", "delivered", "0ld")
	mustContain(t, v, "alice: old reply (read)")
	// Our own receipt to bob (From us) says nothing of our lines.
	v = receipt("alice", "read", "s1")
	mustContain(t, v, "alice: not yet (sent)")

	// A line sent from this screen gets its content ID from the send.
	typeText(t, m, "fresh")
	v = key(t, m, tea.KeyEnter)
	mustContain(t, v, "alice: fresh (sent)")
	v = receipt("bob", "delivered", "c1")
	mustContain(t, v, "alice: fresh (delivered)")
	// A receipt that overtakes the answer of the send is kept for it.
	typeText(t, m, "quick")
	_, cmd := m.Update(tea.KeyMsg{Type: tea.KeyEnter})
	v = receipt("bob", "read", "c2")
	mustContain(t, v, "alice: quick (sending…)")
	for _, msg := range exec(cmd) {
		v = run(t, m, msg)
	}
	mustContain(t, v, "alice: quick (read)")
	if len(m.acks) != 0 {
		t.Fatalf("receipts kept after use: %v", m.acks)
	}

	// Groups have no receipts: a group line stays sent.
	key(t, m, tea.KeyTab)
	v = run(t, m, EventMsg{Kind: client.EventReceipt, Conv: "team", ConvID: "c0ffee", Group: true, From: "carol", Status: "read", IDs: []string{"g1"}, At: t0})
	mustContain(t, v, "▸ #team", "alice: hi team (sent)")
}

// TestUnreadSurvivesRestart: the unread counts a screen showed come back
// in a new screen over the same (persisted) read marks, and viewing a
// conversation moves its mark.
func TestUnreadSurvivesRestart(t *testing.T) {
	m, f := newModel(t)
	run(t, m, Load(context.Background(), f))
	f.recv(t, m, client.Event{Kind: client.EventMessage, Conv: "team", ConvID: "c0ffee", Group: true, From: "carol", Text: "one", At: t0})
	v := f.recv(t, m, client.Event{Kind: client.EventMessage, Conv: "team", ConvID: "c0ffee", Group: true, From: "dave", Text: "two", At: t0})
	mustContain(t, v, "#team (2)")

	restart := func() string {
		t.Helper()
		m, _ = newModel(t)
		return run(t, m, Load(context.Background(), f))
	}
	v = restart()
	mustContain(t, v, "▸ bob", "#team (2)")
	v = key(t, m, tea.KeyTab)
	mustContain(t, v, "▸ #team", "carol: one", "dave: two")
	mustNotContain(t, v, "(2)")
	// Bob writes while #team is on screen.
	v = f.recv(t, m, client.Event{Kind: client.EventMessage, Conv: "bob", ConvID: "b0b", From: "bob", Text: "ping", At: t0})
	mustContain(t, v, "bob (1)")

	// After the next restart #team is read; bob's text is unread, but bob
	// is the conversation on screen at start, so it is seen at once.
	before := len(f.markedSoFar())
	v = restart()
	mustNotContain(t, v, "#team (", "bob (")
	mustContain(t, v, "bob: ping")
	if got := f.markedSoFar()[before:]; len(got) != 1 || got[0] != "b0b" {
		t.Fatalf("MarkRead at start: %q, want [b0b]", got)
	}
	v = restart()
	mustNotContain(t, v, "#team (", "bob (")
}

// TestMarkReadWhenSeen: the client is told that texts were read when, and
// only when, the user has them on screen: a text arriving in the selected
// conversation, or a switch to a conversation with unread texts.
func TestMarkReadWhenSeen(t *testing.T) {
	m, f := newModel(t)
	run(t, m, Load(context.Background(), f))
	want := func(targets ...string) {
		t.Helper()
		if got := f.markedSoFar(); !slices.Equal(got, targets) {
			t.Fatalf("MarkRead calls %q, want %q", got, targets)
		}
	}
	want() // nothing was unread

	// What is not a text from someone else is nothing to read.
	f.recv(t, m, client.Event{Kind: client.EventMemberAdded, Conv: "bob", ConvID: "b0b", From: "bob", Text: "bob added a device", At: t0})
	run(t, m, EventMsg{Kind: client.EventReceipt, Conv: "bob", ConvID: "b0b", From: "bob", Status: "read", IDs: []string{"0ld"}, At: t0})
	run(t, m, EventMsg{Kind: client.EventWarning, Text: "cover traffic paused", At: t0})
	typeText(t, m, "hello")
	key(t, m, tea.KeyEnter)
	want()

	// A text in the selected conversation is seen at once.
	f.recv(t, m, client.Event{Kind: client.EventMessage, Conv: "bob", ConvID: "b0b", From: "bob", Text: "hi", At: t0})
	want("b0b")
	// One elsewhere only when the user goes there.
	f.recv(t, m, client.Event{Kind: client.EventMessage, Conv: "team", ConvID: "c0ffee", Group: true, From: "carol", Text: "noon", At: t0})
	want("b0b")
	key(t, m, tea.KeyTab)
	want("b0b", "c0ffee")
	key(t, m, tea.KeyShiftTab) // back to bob: nothing new there
	key(t, m, tea.KeyTab)      // nor in #team any more
	want("b0b", "c0ffee")
	key(t, m, tea.KeyShiftTab)
	f.recv(t, m, client.Event{Kind: client.EventMessage, Conv: "team", ConvID: "c0ffee", Group: true, From: "carol", Text: "or one", At: t0})
	typeText(t, m, "/to #team")
	v := key(t, m, tea.KeyEnter)
	mustContain(t, v, "▸ #team")
	want("b0b", "c0ffee", "c0ffee")
	typeText(t, m, "/to #team") // already there, nothing new
	key(t, m, tea.KeyEnter)
	want("b0b", "c0ffee", "c0ffee")

	// Texts that arrive while a MarkRead runs lead to one more after it,
	// not one each.
	f.marked = nil
	text := EventMsg{Kind: client.EventMessage, Conv: "team", ConvID: "c0ffee", Group: true, From: "dave", Text: "a", At: t0}
	_, first := m.Update(text)
	_, second := m.Update(text)
	_, third := m.Update(text)
	if first == nil || second != nil || third != nil {
		t.Fatalf("commands %v %v %v: want only the first", first != nil, second != nil, third != nil)
	}
	run(t, m, exec(first)[0])
	want("c0ffee", "c0ffee")

	// A failure is said, and the next text tries again.
	f.markErr = errors.New("state: disk full")
	v = f.recv(t, m, client.Event{Kind: client.EventMessage, Conv: "team", ConvID: "c0ffee", Group: true, From: "dave", Text: "b", At: t0})
	mustContain(t, v, "could not mark #team read: state: disk full")
	f.markErr = nil
	f.recv(t, m, client.Event{Kind: client.EventMessage, Conv: "team", ConvID: "c0ffee", Group: true, From: "dave", Text: "c", At: t0})
	want("c0ffee", "c0ffee", "c0ffee", "c0ffee")
}
