package tui

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/cursor"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/client/safetext"
)

// Messenger is what the screen needs of a *client.Client.
type Messenger interface {
	Handle() string
	// SendText sends text and returns its hex content ID, which receipts
	// name it by.
	SendText(ctx context.Context, target, text string) (id string, err error)
	Conversations(ctx context.Context) ([]client.Conversation, error)
	History(target string, limit int) ([]client.Event, error)
	// Unread counts the texts from others after each conversation's read
	// mark, by conversation ID.
	Unread() (map[string]int, error)
	// MarkRead records that the user has seen the conversation (target:
	// a hex conversation ID, a handle or #group) up to now: it moves the
	// read mark, and schedules read receipts where they are on.
	MarkRead(target string) error
	Alarms() ([]client.Alarm, error)
	QueuedSince() (map[string]time.Time, error)
}

// Messages that drive the model from outside.
type (
	// Opened says the local state is open; Load makes it.
	Opened struct {
		M      Messenger
		Convs  []client.Conversation
		Events []client.Event // the stored history, oldest first
		Unread map[string]int // texts after the read marks, by conversation ID
		Alarms []client.Alarm
		Queued map[string]time.Time
		Err    error // loading failed: the screen shows it and quits
	}
	// Status replaces the status line ("connecting…", "connected").
	Status string
	// EventMsg is one event of Sync or Follow.
	EventMsg client.Event
	// Fatal ends the screen with an error (Err returns it).
	Fatal struct{ Err error }
)

// Internal messages.
type (
	sentMsg struct {
		id  int
		cid string // the content ID, if the message was recorded
		err error
		at  time.Time
	}
	markedMsg struct {
		c   *conv
		err error
	}
	deliveryMsg struct {
		queued map[string]time.Time
		convs  []client.Conversation
		err    error
		loop   bool
	}
	tickMsg struct{}
)

// HistoryLimit is how many stored events Load shows at start.
const HistoryLimit = 500

// Load reads what the screen shows at start from m: conversations,
// history, unread counts, alarms and the outbox's delivery state.
func Load(ctx context.Context, m Messenger) Opened {
	o := Opened{M: m}
	if o.Convs, o.Err = m.Conversations(ctx); o.Err != nil {
		return o
	}
	if o.Events, o.Err = m.History("", HistoryLimit); o.Err != nil {
		return o
	}
	if o.Unread, o.Err = m.Unread(); o.Err != nil {
		return o
	}
	if o.Alarms, o.Err = m.Alarms(); o.Err != nil {
		return o
	}
	o.Queued, o.Err = m.QueuedSince()
	return o
}

// Options configure New. Zero values take defaults.
type Options struct {
	// Context bounds the sends; default context.Background().
	Context context.Context
	// Explain renders an error in one line; default err.Error().
	Explain func(error) string
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Refresh is how often the outbox is checked for delivery marks;
	// default 2 s.
	Refresh time.Duration
	// Status is the first status line; default "opening the local state…".
	Status string
}

// delivery is the mark of an own message: the outbox's view (sending,
// queued, sent, failed), then what the contact's receipts said (delivered,
// read). Receipts exist only in direct chats (client/receipts.go: a group
// receipt would tell every member when one read), so in groups an own
// message stays at sent.
type delivery int

const (
	stSending delivery = iota
	stQueued
	stSent
	stDelivered
	stRead
	stFailed
)

type line struct {
	kind  client.EventKind
	from  string
	text  string
	at    time.Time
	own   bool
	state delivery
	id    int    // local ID of a message sent from this screen
	cid   string // hex content ID of an own message; "" until known
	fail  string // why it failed
}

type conv struct {
	name   string
	id     string // hex conversation ID; "" until known
	group  bool
	lines  []line
	unread int       // texts from others not seen yet
	queued time.Time // oldest outbox entry of the conversation; zero: none
	// marking: a MarkRead of this conversation is running; remark: texts
	// arrived meanwhile, so another follows it.
	marking, remark bool
}

// target names c for the client: by conversation ID once known (that also
// reaches a group we were removed from), else by name.
func (c *conv) target() string {
	switch {
	case c.id != "":
		return c.id
	case c.group:
		return "#" + c.name
	}
	return c.name
}

// display is the conversation's name as shown (safe for the terminal:
// a group's name is chosen by its creator).
func (c *conv) display() string {
	if c.group {
		return "#" + safetext.Line(c.name)
	}
	return safetext.Line(c.name)
}

// Model is the chat screen.
type Model struct {
	opts   Options
	m      Messenger
	me     string
	convs  []*conv
	sel    int
	input  textinput.Model
	alarms []string
	status string
	note   string // the answer to the last command or key
	width  int
	height int
	nextID int
	err    error
	ticked bool
	// acks holds receipts for content IDs no line had when they came (a
	// receipt may overtake the answer of our own send).
	acks map[string]delivery
}

// New returns the screen before the local state is open.
func New(opts Options) *Model {
	if opts.Context == nil {
		opts.Context = context.Background()
	}
	if opts.Explain == nil {
		opts.Explain = func(err error) string { return err.Error() }
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Refresh <= 0 {
		opts.Refresh = 2 * time.Second
	}
	if opts.Status == "" {
		opts.Status = "opening the local state…"
	}
	in := textinput.New()
	in.Prompt = "> "
	in.Placeholder = "type a message, Enter sends; /to <handle|#group> opens a conversation"
	in.CharLimit = 4000
	in.Cursor.SetMode(cursor.CursorStatic)
	in.Focus()
	return &Model{opts: opts, input: in, status: opts.Status, width: 80, height: 24}
}

// Err is the error that ended the screen, if any.
func (m *Model) Err() error { return m.err }

// Init implements tea.Model.
func (m *Model) Init() tea.Cmd { return nil }

// Update implements tea.Model.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		return m, nil
	case tea.KeyMsg:
		return m.key(msg)
	case Opened:
		if msg.Err != nil {
			m.err = msg.Err
			return m, tea.Quit
		}
		mark := m.open(msg)
		if m.ticked {
			return m, mark
		}
		m.ticked = true
		return m, tea.Batch(mark, m.refresh(true))
	case Status:
		m.status = string(msg)
		return m, nil
	case EventMsg:
		return m, m.event(client.Event(msg))
	case Fatal:
		m.err = msg.Err
		return m, tea.Quit
	case sentMsg:
		m.sent(msg)
		return m, m.refresh(false)
	case markedMsg:
		return m, m.marked(msg)
	case deliveryMsg:
		m.delivered(msg)
		if msg.loop {
			return m, tea.Tick(m.opts.Refresh, func(time.Time) tea.Msg { return tickMsg{} })
		}
		return m, nil
	case tickMsg:
		return m, m.refresh(true)
	}
	var cmd tea.Cmd
	m.input, cmd = m.input.Update(msg)
	return m, cmd
}

func (m *Model) key(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	switch k.String() {
	case "ctrl+c", "esc":
		return m, tea.Quit
	case "tab", "ctrl+n":
		return m, m.move(1)
	case "shift+tab", "ctrl+p":
		return m, m.move(-1)
	case "enter":
		return m, m.enter()
	}
	var cmd tea.Cmd
	m.input, cmd = m.input.Update(k)
	return m, cmd
}

func (m *Model) move(d int) tea.Cmd {
	if len(m.convs) == 0 {
		return nil
	}
	m.sel = (m.sel + d + len(m.convs)) % len(m.convs)
	return m.seen(m.convs[m.sel])
}

// seen is called when c comes on screen: its unread texts are read now.
func (m *Model) seen(c *conv) tea.Cmd {
	if c == nil || c.unread == 0 {
		return nil
	}
	c.unread = 0
	return m.markRead(c)
}

// markRead tells the client that the user has seen c up to now (its read
// mark, and read receipts where they are on). One call per conversation
// runs at a time; texts that arrive meanwhile are covered by one more
// call after it.
func (m *Model) markRead(c *conv) tea.Cmd {
	if m.m == nil {
		return nil
	}
	if c.marking {
		c.remark = true
		return nil
	}
	c.marking = true
	messenger, target := m.m, c.target()
	return func() tea.Msg { return markedMsg{c: c, err: messenger.MarkRead(target)} }
}

func (m *Model) marked(k markedMsg) tea.Cmd {
	c := k.c
	c.marking = false
	if k.err != nil {
		m.note = "could not mark " + c.display() + " read: " + m.opts.Explain(k.err)
	}
	if c.remark {
		c.remark = false
		return m.markRead(c)
	}
	return nil
}

func (m *Model) selected() *conv {
	if m.sel < 0 || m.sel >= len(m.convs) {
		return nil
	}
	return m.convs[m.sel]
}

// enter acts on the input line: a command, or a message to send.
func (m *Model) enter() tea.Cmd {
	text := strings.TrimSpace(m.input.Value())
	if text == "" {
		return nil
	}
	if strings.HasPrefix(text, "/") {
		m.input.SetValue("")
		return m.command(text)
	}
	if m.m == nil {
		m.note = "not ready yet: the local state is still opening"
		return nil
	}
	c := m.selected()
	if c == nil {
		m.note = "no conversation: /to <handle|#group> starts one"
		return nil
	}
	m.input.SetValue("")
	m.note = ""
	m.nextID++
	id := m.nextID
	c.lines = append(c.lines, line{kind: client.EventMessage, from: m.me, text: text, at: m.opts.Now(), own: true, state: stSending, id: id})
	// A group by its ID or #name; a chat by its peer's handle (the
	// client picks the chat both sides share).
	target := c.name
	if c.group {
		target = c.target()
	}
	messenger, ctx, now := m.m, m.opts.Context, m.opts.Now
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		cid, err := messenger.SendText(ctx, target, text)
		return sentMsg{id: id, cid: cid, err: err, at: now()}
	}
}

func (m *Model) command(text string) tea.Cmd {
	fields := strings.Fields(text)
	switch fields[0] {
	case "/to":
		if len(fields) != 2 {
			m.note = "usage: /to <handle|#group>"
			return nil
		}
		name, group := strings.CutPrefix(fields[1], "#")
		if i := m.find(name, group); i >= 0 {
			m.sel = i
			m.note = ""
			return m.seen(m.convs[i])
		}
		m.convs = append(m.convs, &conv{name: name, group: group})
		m.sel = len(m.convs) - 1
		m.note = "new conversation with " + name + ": the first message starts it"
	case "/quit":
		m.note = "Esc or ctrl-c quits"
	default:
		m.note = fmt.Sprintf("unknown command %s (/to <handle|#group>)", fields[0])
	}
	return nil
}

// find finds a group (group) or a direct chat by name: a group named
// like a contact is another conversation, never merged with the chat.
func (m *Model) find(name string, group bool) int {
	for i, c := range m.convs {
		if c.name == name && c.group == group {
			return i
		}
	}
	return -1
}

// lookup finds a conversation by name, else by ID; -1 if none.
func (m *Model) lookup(name, id string, group bool) int {
	if i := m.find(name, group); i >= 0 || id == "" {
		return i
	}
	for i, c := range m.convs {
		if c.id == id {
			return i
		}
	}
	return -1
}

// conv returns the conversation of e, added at the end if new.
func (m *Model) conv(name, id string, group bool) *conv {
	i := m.lookup(name, id, group)
	if i < 0 {
		m.convs = append(m.convs, &conv{name: name})
		i = len(m.convs) - 1
	}
	c := m.convs[i]
	if id != "" {
		c.id = id
	}
	c.group = c.group || group
	return c
}

// open shows what Load read. The conversation selected at start is on
// screen, so its unread texts are read (the command says so to the client).
func (m *Model) open(o Opened) tea.Cmd {
	m.m = o.M
	m.me = o.M.Handle()
	for _, cv := range o.Convs {
		c := m.conv(cv.Name, cv.ID, cv.Group)
		c.unread += o.Unread[cv.ID] // both of a chat both sides started add up
	}
	for _, e := range o.Events {
		c := m.conv(e.Conv, e.ConvID, e.Group)
		c.lines = append(c.lines, m.lineOf(e))
	}
	for _, a := range o.Alarms {
		m.alarms = append(m.alarms, alarmText(a))
	}
	m.setQueued(o.Queued)
	if m.status == m.opts.Status {
		m.status = "opened"
	}
	return m.seen(m.selected())
}

func (m *Model) lineOf(e client.Event) line {
	l := line{kind: e.Kind, from: e.From, text: e.Text, at: e.At}
	if e.Kind == client.EventGap {
		l.text = fmt.Sprintf("%d message(s) from %s are missing (seq %v)", len(e.Missed), e.From, e.Missed)
	}
	if e.Kind == client.EventMessage && e.From == m.me && m.me != "" {
		l.own, l.state, l.cid = true, stSent, e.ID
		switch e.Status { // what History says the receipts said
		case "delivered":
			l.state = stDelivered
		case "read":
			l.state = stRead
		}
	}
	return l
}

func alarmText(a client.Alarm) string {
	return fmt.Sprintf("%s  (%s)", a, a.At.Local().Format("2006-01-02 15:04"))
}

// event applies one event of Sync or Follow; the command, if any, tells
// the client that the user has seen a new text.
func (m *Model) event(e client.Event) tea.Cmd {
	switch e.Kind {
	case client.EventWarning:
		// Not an alarm (no evidence of an attack): the status line says
		// it until something else replaces it.
		m.status = "warning: " + e.Text
		return nil
	case client.EventAlarm:
		if e.Alarm != nil {
			m.alarms = append(m.alarms, alarmText(*e.Alarm))
		} else {
			m.alarms = append(m.alarms, e.Text)
		}
		return nil
	case client.EventReceipt:
		m.receipt(e)
		return nil
	case client.EventGap:
		where := e.Conv
		if e.Group {
			where = "#" + where
		}
		m.alarms = append(m.alarms, fmt.Sprintf("gap in %s: %d message(s) from %s are missing (seq %v)  (%s)",
			where, len(e.Missed), e.From, e.Missed, e.At.Local().Format("2006-01-02 15:04")))
	}
	switch e.Kind {
	case client.EventMessage, client.EventJoined, client.EventMemberAdded, client.EventMemberRemoved,
		client.EventRemoved, client.EventGap:
	default:
		return nil // kinds this screen does not show
	}
	if e.Conv == "" {
		return nil
	}
	c := m.conv(e.Conv, e.ConvID, e.Group)
	c.lines = append(c.lines, m.lineOf(e))
	if len(m.convs) == 1 {
		m.sel = 0
	}
	if e.Kind != client.EventMessage || e.From == m.me {
		return nil
	}
	if c == m.selected() {
		return m.markRead(c) // on screen: seen now
	}
	c.unread++
	return nil
}

// receipt applies a contact's receipt to our own lines it names. Our own
// receipts to others (From us) change nothing here, and groups have none.
func (m *Model) receipt(e client.Event) {
	if e.From == m.me || e.Group {
		return
	}
	st := stDelivered
	switch e.Status {
	case "delivered":
	case "read":
		st = stRead
	default:
		return
	}
	i := m.lookup(e.Conv, e.ConvID, e.Group)
	if i < 0 {
		return
	}
	c := m.convs[i]
	sending := false // a line of ours waits for its content ID
	for _, l := range c.lines {
		sending = sending || l.own && l.cid == "" && l.state == stSending
	}
	for _, id := range e.IDs {
		found := false
		for j := range c.lines {
			if l := &c.lines[j]; l.own && l.cid == id {
				l.state, found = ack(l.state, st), true
			}
		}
		if !found && sending {
			if m.acks == nil {
				m.acks = map[string]delivery{}
			}
			m.acks[id] = ack(m.acks[id], st)
		}
	}
}

// ack is the mark after a receipt saying st: never back (a delivery
// receipt may come after the read receipt, their delays being random).
func ack(old, st delivery) delivery {
	if old == stRead {
		return old
	}
	return st
}

func (m *Model) sent(s sentMsg) {
	for _, c := range m.convs {
		for i := range c.lines {
			l := &c.lines[i]
			if l.id != s.id || !l.own {
				continue
			}
			l.at, l.cid = s.at, s.cid
			switch {
			case s.err == nil:
				l.state = stSent
			case errors.Is(s.err, client.ErrQueued):
				l.state = stQueued
			default:
				l.state, l.fail = stFailed, m.opts.Explain(s.err)
			}
			if st, ok := m.acks[s.cid]; ok && s.cid != "" {
				l.state = st
				delete(m.acks, s.cid)
			}
			return
		}
	}
}

// refresh asks for the outbox's state (and the conversation IDs, while
// some are unknown).
func (m *Model) refresh(loop bool) tea.Cmd {
	if m.m == nil {
		return nil
	}
	needIDs := false
	for _, c := range m.convs {
		needIDs = needIDs || c.id == ""
	}
	messenger, ctx := m.m, m.opts.Context
	return func() tea.Msg {
		d := deliveryMsg{loop: loop}
		d.queued, d.err = messenger.QueuedSince()
		if d.err == nil && needIDs {
			d.convs, d.err = messenger.Conversations(ctx)
		}
		return d
	}
}

func (m *Model) delivered(d deliveryMsg) {
	if d.err != nil {
		return // the next tick tries again; the state is unchanged
	}
	for _, cv := range d.convs {
		if c := m.selectedOr(cv.Name, cv.Group); c != nil && c.id == "" {
			c.id, c.group = cv.ID, cv.Group
		}
	}
	m.setQueued(d.queued)
}

func (m *Model) selectedOr(name string, group bool) *conv {
	if i := m.find(name, group); i >= 0 {
		return m.convs[i]
	}
	return nil
}

// setQueued recomputes the delivery marks: an own message is queued
// while an outbox entry of its conversation as old as it remains.
func (m *Model) setQueued(q map[string]time.Time) {
	for _, c := range m.convs {
		c.queued = time.Time{}
		if c.id != "" {
			c.queued = q[c.id]
		}
		for i := range c.lines {
			l := &c.lines[i]
			if !l.own || (l.state != stSent && l.state != stQueued) {
				continue
			}
			if c.id == "" {
				continue // not started yet as far as we know: keep the Send result
			}
			if !c.queued.IsZero() && !l.at.Before(c.queued) {
				l.state = stQueued
			} else {
				l.state = stSent
			}
		}
	}
}

// Styles.
var (
	alarmStyle  = lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("15")).Background(lipgloss.Color("1"))
	statusStyle = lipgloss.NewStyle().Reverse(true)
	faint       = lipgloss.NewStyle().Faint(true)
	selStyle    = lipgloss.NewStyle().Bold(true)
	unreadStyle = lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("3"))
	fromStyle   = lipgloss.NewStyle().Bold(true)
	gapStyle    = lipgloss.NewStyle().Foreground(lipgloss.Color("1"))
	stateStyles = map[delivery]lipgloss.Style{
		stSending:   lipgloss.NewStyle().Faint(true),
		stQueued:    lipgloss.NewStyle().Foreground(lipgloss.Color("3")),
		stSent:      lipgloss.NewStyle().Foreground(lipgloss.Color("2")),
		stDelivered: lipgloss.NewStyle().Foreground(lipgloss.Color("2")),
		stRead:      lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("2")),
		stFailed:    lipgloss.NewStyle().Foreground(lipgloss.Color("1")),
	}
	markText = map[delivery]string{
		stSending: "sending…", stQueued: "queued", stSent: "sent",
		stDelivered: "delivered", stRead: "read", stFailed: "failed",
	}
)

// fit truncates s to w cells and pads it to exactly w.
func fit(s string, w int) string {
	if w <= 0 {
		return ""
	}
	s = ansi.Truncate(s, w, "…")
	if n := ansi.StringWidth(s); n < w {
		s += strings.Repeat(" ", w-n)
	}
	return s
}

// View implements tea.Model.
func (m *Model) View() string {
	w, h := max(m.width, 20), max(m.height, 8)
	var out []string

	if n := len(m.alarms); n > 0 {
		show := m.alarms
		if n > 3 {
			show = show[n-3:]
			out = append(out, alarmStyle.Render(fit(fmt.Sprintf(" ⚠ %d ALARMS (the newest below; qpc status lists them all)", n), w)))
		}
		for _, a := range show {
			out = append(out, alarmStyle.Render(fit(" ⚠ ALARM "+safetext.Line(a), w)))
		}
	}
	who := m.me
	if who == "" {
		who = "…"
	}
	out = append(out, statusStyle.Render(fit(" qpc chat · "+safetext.Line(who)+" · "+safetext.Line(m.status), w)))

	bodyH := h - len(out) - 3 // the body, then note, input and help lines
	if bodyH < 1 {
		bodyH = 1
	}
	lw := min(24, w/4)
	rw := w - lw - 1
	left := m.listLines(lw, bodyH)
	right := m.messageLines(rw, bodyH)
	for i := range bodyH {
		out = append(out, left[i]+faint.Render("│")+right[i])
	}
	out = append(out, faint.Render(fit(safetext.Line(m.note), w)))
	m.input.Width = w - 3
	out = append(out, fit(m.input.View(), w))
	out = append(out, faint.Render(fit("Tab/ctrl-n next · shift-Tab/ctrl-p previous · Enter send · /to <handle|#group> · Esc/ctrl-c quit", w)))
	return strings.Join(out, "\n")
}

func (m *Model) listLines(w, h int) []string {
	out := make([]string, 0, h)
	out = append(out, fit(faint.Render(" conversations"), w))
	for i, c := range m.convs {
		name := c.display()
		s := "  " + name
		if i == m.sel {
			s = "▸ " + name
		}
		if c.unread > 0 {
			badge := fmt.Sprintf(" (%d)", c.unread)
			s = ansi.Truncate(s, w-len(badge), "…") + unreadStyle.Render(badge)
		}
		if i == m.sel {
			s = selStyle.Render(s)
		}
		out = append(out, fit(s, w))
	}
	if len(m.convs) == 0 {
		out = append(out, fit(faint.Render("  (none: /to <handle>)"), w))
	}
	if len(out) > h { // keep the selected one visible
		start := min(max(m.sel+2-h, 0), len(out)-h)
		out = append(out[:1], out[1+start:start+h]...)
	}
	for len(out) < h {
		out = append(out, strings.Repeat(" ", w))
	}
	return out
}

func (m *Model) messageLines(w, h int) []string {
	c := m.selected()
	var all []string
	if c == nil {
		all = []string{faint.Render(" no conversation selected")}
	} else {
		for _, l := range c.lines {
			// Every line of an entry after its first (a line break in a
			// message, or a wrap) is indented: only the screen starts a
			// line of the pane.
			for i, s := range strings.Split(ansi.Wrap(m.render(l), w-1-len(indent), " "), "\n") {
				if i > 0 {
					s = indent + s
				}
				all = append(all, s)
			}
		}
		if len(c.lines) == 0 {
			all = append(all, faint.Render(" no messages yet"))
		}
	}
	if len(all) > h {
		all = all[len(all)-h:]
	}
	out := make([]string, 0, h)
	for len(out)+len(all) < h {
		out = append(out, strings.Repeat(" ", w))
	}
	for _, s := range all {
		out = append(out, fit(" "+s, w))
	}
	return out
}

// indent starts every line of the message pane that continues an entry.
const indent = "      "

// render is one entry of the message pane. What a peer or the server
// chose (names, texts) goes through package safetext: no control reaches
// the terminal, and a text's line breaks stay as "\n" for messageLines
// to indent.
func (m *Model) render(l line) string {
	at := l.at.Local().Format("15:04")
	switch l.kind {
	case client.EventMessage:
		s := faint.Render(at) + " " + fromStyle.Render(safetext.Line(l.from)) + ": " + safetext.Text(l.text)
		if l.own {
			mark := markText[l.state]
			if l.state == stFailed {
				mark += ": " + safetext.Line(l.fail)
			}
			s += " " + stateStyles[l.state].Render("("+mark+")")
		}
		return s
	case client.EventGap:
		return faint.Render(at) + " " + gapStyle.Render("! "+safetext.Line(l.text))
	default:
		return faint.Render(at + " * " + safetext.Line(l.text))
	}
}
