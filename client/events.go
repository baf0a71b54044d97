package client

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/quicprochat/qpc/client/safetext"
	"github.com/quicprochat/qpc/client/state"
)

// EventKind says what happened.
type EventKind string

// Event kinds.
const (
	EventMessage       EventKind = "message"        // a text from a member
	EventJoined        EventKind = "joined"         // we were added to a conversation
	EventMemberAdded   EventKind = "member-added"   // someone joined a group (their mailbox is known)
	EventMemberRemoved EventKind = "member-removed" // someone left or was removed
	EventAdmins        EventKind = "admins"         // the group's admins changed
	EventRemoved       EventKind = "removed"        // we were removed from a group
	EventGap           EventKind = "gap"            // messages from a member are missing
	EventAlarm         EventKind = "alarm"          // see Alarm
	EventReceipt       EventKind = "receipt"        // a contact received or read our messages (From them), or we sent them a receipt (From us)
	EventWarning       EventKind = "warning"        // something the user should act on (Text says what); not evidence of an attack
	EventInvited       EventKind = "invited"        // a group invitation waits (ID names it for AcceptInvite); nothing joined yet
)

// Event is one thing a Sync or Follow brought. Texts and membership
// changes are also kept in the conversation's history.
type Event struct {
	Kind   EventKind `json:"kind"`
	Conv   string    `json:"conv"`             // the group's name, or the peer's handle for a direct chat
	ConvID string    `json:"conv_id"`          // hex MLS group ID
	Group  bool      `json:"group"`            // a group rather than a direct chat
	From   string    `json:"from,omitempty"`   // the member it concerns
	Text   string    `json:"text,omitempty"`   // the message, or a description
	Seq    uint64    `json:"seq,omitempty"`    // the sender's sequence number
	SentAt time.Time `json:"sent_at"`          // the sender's clock (messages)
	At     time.Time `json:"at"`               // when this client saw it
	Alarm  *Alarm    `json:"alarm,omitempty"`  // for EventAlarm
	Missed []uint64  `json:"missed,omitempty"` // for EventGap: the missing sequence numbers
	ID     string    `json:"id,omitempty"`     // the message's hex content ID
	Status string    `json:"status,omitempty"` // our messages in History: sent, delivered, read; EventReceipt: delivered or read
	IDs    []string  `json:"ids,omitempty"`    // for EventReceipt: the content IDs acknowledged
}

// Indent starts every line of a message text after its first in
// Event.String, so that a peer's text never starts a line of its own.
const Indent = "    "

// String is a rendering for terminals: one line, except that a message
// text with line breaks goes on, each further line starting with Indent.
// What came from a peer or the server (names, texts, alarm details) is
// shown through package safetext, so it cannot drive the terminal; only
// this client's own lines ("ALARM ...", "WARNING ...") start at the left.
func (e Event) String() string {
	where := safetext.Line(e.Conv)
	if e.Group {
		where = "#" + where
	}
	from := safetext.Line(e.From)
	switch e.Kind {
	case EventMessage:
		text := safetext.Message(e.Text, Indent)
		if e.Group {
			return fmt.Sprintf("[%s] %s: %s", where, from, text)
		}
		return fmt.Sprintf("%s: %s", from, text)
	case EventAlarm:
		if e.Alarm == nil {
			return "ALARM " + safetext.Line(e.Text)
		}
		return "ALARM " + e.Alarm.String()
	case EventWarning:
		return "WARNING " + safetext.Line(e.Text)
	case EventGap:
		return fmt.Sprintf("[%s] %d message(s) from %s are missing (seq %v)", where, len(e.Missed), from, e.Missed)
	default:
		return fmt.Sprintf("[%s] %s", where, safetext.Line(e.Text))
	}
}

// AlarmKind classifies alarms.
type AlarmKind string

// Alarm kinds.
const (
	AlarmSplitView AlarmKind = "split-view" // a contact saw a KT checkpoint inconsistent with ours
	AlarmKT        AlarmKind = "kt"         // the log contradicted itself, or owner monitoring found a key we did not publish
	// AlarmKTUnverified: the server kept a key-transparency check from
	// completing past its bound (status.go): owner monitoring, or a
	// contact's gossiped checkpoint it will not prove consistent with ours.
	AlarmKTUnverified AlarmKind = "kt-unverified"
	AlarmKeyChange    AlarmKind = "key-change" // a contact's identity key changed
	AlarmBadSender    AlarmKind = "bad-sender" // an envelope whose sender does not match key transparency
	AlarmDropped      AlarmKind = "dropped"    // a message that could not be decrypted was dropped
	AlarmTokenKey     AlarmKind = "token-key"  // a token key or epoch singling us out: not the one key transparency commits, changed, or against the clock
	// AlarmMemberPolicy: a group member sent what the group's policy
	// does not allow (a proposal to remove or add someone else); it was
	// ignored.
	AlarmMemberPolicy AlarmKind = "member-policy"
	// AlarmGroupStuck: a commit of a conversation's creator could not be
	// processed, so the conversation cannot go on for us: the creator
	// must remove and re-add us.
	AlarmGroupStuck AlarmKind = "group-stuck"
)

// Alarm is something the user must know: evidence that the server lies,
// or a message that could not be read. Alarms persist until cleared.
type Alarm struct {
	Kind     AlarmKind `json:"kind"`
	At       time.Time `json:"at"`
	Detail   string    `json:"detail"`
	Evidence [][]byte  `json:"evidence,omitempty"` // signed checkpoints or proofs
}

// String renders the alarm on one line; its kind and detail go through
// safetext.Line (a detail may quote what the server or a peer sent).
func (a Alarm) String() string {
	return fmt.Sprintf("%s: %s", safetext.Line(string(a.Kind)), safetext.Line(a.Detail))
}

// raise records an alarm; it is also returned as an event by the
// operation that found it.
func (c *Client) raise(a Alarm) {
	c.pending = append(c.pending, c.recordAlarm(a))
}

// recordAlarm dates a, appends it to the stored alarms and returns its
// event.
func (c *Client) recordAlarm(a Alarm) Event {
	if a.At.IsZero() {
		a.At = c.opts.Now()
	}
	raw, err := json.Marshal(a)
	if err == nil {
		err = c.store.Update(func(tx *state.Tx) error {
			_, err := tx.Append(bucketAlarms, raw)
			return err
		})
	}
	if err != nil {
		c.log.Warn("could not record an alarm", "err", err)
	}
	return Event{Kind: EventAlarm, Alarm: &a, At: a.At, Text: a.Detail}
}

// Alarms lists the recorded alarms, oldest first.
func (c *Client) Alarms() ([]Alarm, error) {
	c.op.Lock()
	defer c.op.Unlock()
	var out []Alarm
	err := c.store.View(func(tx *state.Tx) error {
		return tx.ForEachSeq(bucketAlarms, 0, func(_ uint64, v []byte) error {
			var a Alarm
			if err := jsonUnmarshal(v, &a); err != nil {
				return err
			}
			out = append(out, a)
			return nil
		})
	})
	return out, err
}

func jsonUnmarshal(raw []byte, v any) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%w: %v", state.ErrCorrupt, err)
	}
	return nil
}
