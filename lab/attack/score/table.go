package score

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/quicprochat/qpc/lab/record"
)

// Table is a Truth held in maps: what a ground-truth file (a live run's,
// FromRecord) or a generated schedule (lab/trace.FromSchedule) says.
// Build it with Own, Link and Receive, then Sort; the zero value is not
// usable, call NewTable.
type Table struct {
	owner    map[string]string // mailbox -> handle
	contacts map[[2]string]bool
	recv     map[string][]int64
}

// NewTable returns an empty Table.
func NewTable() *Table {
	return &Table{owner: map[string]string{}, contacts: map[[2]string]bool{}, recv: map[string][]int64{}}
}

// Own records that handle h reads mailbox m.
func (t *Table) Own(m, h string) { t.owner[m] = h }

// Link records that handles a and b share a conversation.
func (t *Table) Link(a, b string) {
	if a != b {
		t.contacts[[2]string{min(a, b), max(a, b)}] = true
	}
}

// Receive records that handle h was sent a text at time at.
func (t *Table) Receive(h string, at int64) { t.recv[h] = append(t.recv[h], at) }

// Sort sorts the receive times; call it once everything is in.
func (t *Table) Sort() {
	for _, r := range t.recv {
		slices.Sort(r)
	}
}

// Owner implements Truth.
func (t *Table) Owner(m string) (string, bool) { h, ok := t.owner[m]; return h, ok }

// Contact implements Truth.
func (t *Table) Contact(a, b string) bool { return t.contacts[[2]string{min(a, b), max(a, b)}] }

// Received implements Truth.
func (t *Table) Received(h string) []int64 { return t.recv[h] }

// FromRecord builds a Table from a live run's ground truth (lab/record),
// keyed by handle as the attacker names people. Texts the server stored
// before from (the setup; run.json's run_start_ns) are left out and
// times are shifted by -from, to match a record read from that moment.
func FromRecord(lines []record.Truth, from int64) (*Table, error) {
	t := NewTable()
	handle := map[string]string{}
	for _, x := range lines {
		if u := x.User; u != nil {
			handle[u.User] = u.Handle
			if u.IntroMailbox != "" {
				t.Own(u.IntroMailbox, u.Handle)
			}
		}
	}
	name := func(u string) (string, error) {
		h, ok := handle[u]
		if !ok {
			return "", fmt.Errorf("score: truth names user %q with no user line", u)
		}
		return h, nil
	}
	for _, x := range lines {
		switch {
		case x.Conv != nil:
			var hs []string
			for _, u := range x.Conv.Members {
				h, err := name(u)
				if err != nil {
					return nil, err
				}
				hs = append(hs, h)
				for _, m := range x.Conv.Mailboxes[u] {
					t.Own(m, h)
				}
			}
			for i := range hs {
				for j := range i {
					t.Link(hs[i], hs[j])
				}
			}
		case x.Message != nil && x.Message.Kind == record.MsgText && x.Message.T >= from:
			for _, u := range x.Message.To {
				h, err := name(u)
				if err != nil {
					return nil, err
				}
				t.Receive(h, x.Message.T-from)
			}
		}
	}
	t.Sort()
	return t, nil
}

// ReceiptLags pairs each receipt of the live truth with the last text its
// sender received from its recipient in that conversation before it, and
// returns the delays (texts and receipts after from only): how long a
// live run's machine took to answer a text with its receipt.
func ReceiptLags(lines []record.Truth, from int64) []time.Duration {
	var msgs []*record.TruthMessage
	for _, x := range lines {
		if x.Message != nil && x.Message.T >= from {
			msgs = append(msgs, x.Message)
		}
	}
	slices.SortStableFunc(msgs, func(a, b *record.TruthMessage) int { return int(a.T - b.T) })
	last := map[[3]string]int64{} // (conv, from, to) -> time of the last text
	var lags []time.Duration
	for _, x := range msgs {
		switch x.Kind {
		case record.MsgText:
			for _, to := range x.To {
				last[[3]string{x.Conv, x.From, to}] = x.T
			}
		case record.MsgReceipt:
			if len(x.To) != 1 || strings.HasPrefix(x.Msg, record.StrayPrefix) {
				// A stray receipt answers no text: no lag to measure.
				continue
			}
			k := [3]string{x.Conv, x.To[0], x.From}
			if t0, ok := last[k]; ok {
				lags = append(lags, time.Duration(x.T-t0))
				delete(last, k)
			}
		}
	}
	return lags
}
