package record

import (
	"encoding/json"
	"io"
)

// The values of TruthMessage.Kind.
const (
	MsgText    = "text"
	MsgReceipt = "receipt"
	MsgCover   = "cover"
	// StrayPrefix begins the msg ID of a stray receipt (the scenario key
	// traffic.stray_receipts): a receipt that answers no text of its
	// recipient's, as Martiny et al.'s simulation sends some.
	StrayPrefix = "x"
)

// TruthUser is one simulated user.
type TruthUser struct {
	User         string `json:"user"`                    // the lab's name for the user, e.g. "u17"
	Handle       string `json:"handle,omitempty"`        // the KT label
	IntroMailbox string `json:"intro_mailbox,omitempty"` // receive ID (hex) of the intro mailbox
	Account      string `json:"account,omitempty"`       // the account ID as the observer record writes it
}

// TruthConv is one conversation (a pair or a group).
type TruthConv struct {
	Conv    string   `json:"conv"`
	Members []string `json:"members"`
	// Mailboxes maps each member to the receive IDs (hex) it reads this
	// conversation from.
	Mailboxes map[string][]string `json:"mailboxes,omitempty"`
}

// TruthMessage is one message a user sent.
type TruthMessage struct {
	T    int64    `json:"t"` // nanoseconds since the observer record's start
	From string   `json:"from"`
	To   []string `json:"to,omitempty"`
	Conv string   `json:"conv,omitempty"`
	Msg  string   `json:"msg"`  // the lab's message ID
	Kind string   `json:"kind"` // MsgText, MsgReceipt or MsgCover
}

// Truth is one line of the ground truth: exactly one field is set.
type Truth struct {
	User    *TruthUser
	Conv    *TruthConv
	Message *TruthMessage
}

func checkTruth(line int, x Truth) error {
	switch {
	case x.User != nil:
		u := x.User
		if !isName(u.User, maxID) {
			return formatErr(line, "user %q is not a name", u.User)
		}
		if u.IntroMailbox != "" && !isHex(u.IntroMailbox, maxHex) {
			return formatErr(line, "intro_mailbox %q is not lower-case hex", u.IntroMailbox)
		}
		if u.Account != "" && !isName(u.Account, maxID) {
			return formatErr(line, "account %q is not a name", u.Account)
		}
		if len(u.Handle) > maxHandle {
			return formatErr(line, "handle longer than %d bytes", maxHandle)
		}
	case x.Conv != nil:
		c := x.Conv
		if !isName(c.Conv, maxID) {
			return formatErr(line, "conv %q is not a name", c.Conv)
		}
		if len(c.Members) == 0 {
			return formatErr(line, "conv %q has no members", c.Conv)
		}
		members := make(map[string]bool, len(c.Members))
		for _, m := range c.Members {
			if !isName(m, maxID) {
				return formatErr(line, "member %q is not a name", m)
			}
			if members[m] {
				return formatErr(line, "member %q twice", m)
			}
			members[m] = true
		}
		for m, ids := range c.Mailboxes {
			if !members[m] {
				return formatErr(line, "mailboxes of %q, who is not a member", m)
			}
			for _, id := range ids {
				if !isHex(id, maxHex) {
					return formatErr(line, "mailbox %q is not lower-case hex", id)
				}
			}
		}
	case x.Message != nil:
		m := x.Message
		if m.T < 0 {
			return formatErr(line, "negative t %d", m.T)
		}
		if !isName(m.From, maxID) || !isName(m.Msg, maxID) {
			return formatErr(line, "message without from or msg")
		}
		if m.Conv != "" && !isName(m.Conv, maxID) {
			return formatErr(line, "conv %q is not a name", m.Conv)
		}
		for _, to := range m.To {
			if !isName(to, maxID) {
				return formatErr(line, "to %q is not a name", to)
			}
		}
		switch m.Kind {
		case MsgText, MsgReceipt:
			if len(m.To) == 0 {
				return formatErr(line, "%s message to nobody", m.Kind)
			}
		case MsgCover:
		default:
			return formatErr(line, "message kind %q, want text, receipt or cover", m.Kind)
		}
	default:
		return formatErr(line, "empty ground truth line")
	}
	return nil
}

// truthShape tells the three line types apart by their defining key.
type truthShape struct {
	Msg     *string          `json:"msg"`
	Members *json.RawMessage `json:"members"`
	User    *string          `json:"user"`
}

// TruthReader reads a ground truth record.
type TruthReader struct {
	Header Header
	l      *lines
}

// NewTruthReader reads and checks the header of a ground truth record.
func NewTruthReader(r io.Reader) (*TruthReader, error) {
	l := newLines(r)
	h, err := readHeader(l, SchemaTruth)
	if err != nil {
		return nil, err
	}
	return &TruthReader{Header: h, l: l}, nil
}

// Next returns the next line, or io.EOF after the last. A line with "msg"
// is a message, one with "members" a conversation, one with "user" a user.
func (r *TruthReader) Next() (Truth, error) {
	b, err := r.l.next()
	if err != nil {
		return Truth{}, err
	}
	var shape truthShape
	if err := json.Unmarshal(b, &shape); err != nil {
		return Truth{}, formatErr(r.l.line, "%v", err)
	}
	var x Truth
	switch {
	case shape.Msg != nil:
		x.Message = new(TruthMessage)
		err = strict(r.l.line, b, x.Message)
	case shape.Members != nil:
		x.Conv = new(TruthConv)
		err = strict(r.l.line, b, x.Conv)
	case shape.User != nil:
		x.User = new(TruthUser)
		err = strict(r.l.line, b, x.User)
	default:
		return Truth{}, formatErr(r.l.line, "neither a user, a conversation nor a message")
	}
	if err != nil {
		return Truth{}, err
	}
	if err := checkTruth(r.l.line, x); err != nil {
		return Truth{}, err
	}
	return x, nil
}

// ReadTruth reads a whole ground truth record.
func ReadTruth(r io.Reader) (Header, []Truth, error) {
	tr, err := NewTruthReader(r)
	if err != nil {
		return Header{}, nil, err
	}
	var xs []Truth
	for {
		x, err := tr.Next()
		if err == io.EOF {
			return tr.Header, xs, nil
		}
		if err != nil {
			return tr.Header, xs, err
		}
		xs = append(xs, x)
	}
}

// TruthWriter writes a ground truth record.
type TruthWriter struct {
	w    *lineWriter
	line int
}

// NewTruthWriter writes the header of the ground truth of a run.
func NewTruthWriter(w io.Writer, seed int64, scenario string) (*TruthWriter, error) {
	lw, err := newLineWriter(w, headerJSON{V: Version, Schema: SchemaTruth, Seed: &seed, Scenario: scenario})
	if err != nil {
		return nil, err
	}
	return &TruthWriter{w: lw, line: 1}, nil
}

// Write checks x against the schema and appends it.
func (w *TruthWriter) Write(x Truth) error {
	n := 0
	var v any
	if x.User != nil {
		n, v = n+1, x.User
	}
	if x.Conv != nil {
		n, v = n+1, x.Conv
	}
	if x.Message != nil {
		n, v = n+1, x.Message
	}
	if n != 1 {
		return formatErr(w.line+1, "a ground truth line holds exactly one of user, conv, message (%d set)", n)
	}
	w.w.mu.Lock()
	defer w.w.mu.Unlock()
	if err := checkTruth(w.line+1, x); err != nil {
		return err
	}
	if err := w.w.write(v); err != nil {
		return err
	}
	w.line++
	return nil
}

// WriteUser, WriteConv and WriteMessage are shorthands for Write.
func (w *TruthWriter) WriteUser(u TruthUser) error       { return w.Write(Truth{User: &u}) }
func (w *TruthWriter) WriteConv(c TruthConv) error       { return w.Write(Truth{Conv: &c}) }
func (w *TruthWriter) WriteMessage(m TruthMessage) error { return w.Write(Truth{Message: &m}) }

// Flush writes buffered lines to the underlying writer.
func (w *TruthWriter) Flush() error { return w.w.flush() }
