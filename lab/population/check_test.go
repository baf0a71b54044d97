package population

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/quicprochat/qpc/lab/record"
)

// checkAgainstObserver: every text and receipt of the truth shows in the
// observer record as a Send to a mailbox of its recipient: during the
// schedule, to the recipient's mailbox of that conversation (in the
// setup, a direct chat's first text follows its Welcome into the intro
// mailbox, so there only the recipient's mailboxes together are
// counted).
func checkAgainstObserver(t *testing.T, out string, m *Manifest, users map[string]*record.TruthUser, convs map[string]*record.TruthConv, msgs []*record.TruthMessage) {
	t.Helper()
	f, err := os.Open(filepath.Join(out, FileObserver))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, events, err := record.ReadObserver(f)
	if err != nil {
		t.Fatal(err)
	}
	sends := map[string]int{} // receive ID -> Sends the server recorded
	for _, e := range events {
		if e.Ev == record.EvRequest && e.Kind == "Send" {
			sends[e.Mailbox]++
		}
	}
	if len(sends) == 0 {
		t.Fatal("the observer record holds no Send")
	}
	want := map[string]int{}    // receive ID -> envelopes of the schedule the truth says went there
	perUser := map[string]int{} // user -> envelopes of the whole run to them
	for _, x := range msgs {
		if x.Kind == record.MsgCover {
			continue
		}
		c := convs[x.Conv]
		if c == nil {
			t.Fatalf("%s in an unknown conversation %q", x.Msg, x.Conv)
		}
		for _, to := range x.To {
			boxes := c.Mailboxes[to]
			if len(boxes) == 0 {
				t.Fatalf("%s to %s, who has no mailbox in %s", x.Msg, to, x.Conv)
			}
			perUser[to]++
			if x.T >= m.RunStartNS {
				want[boxes[len(boxes)-1]]++
			}
		}
	}
	for mb, n := range want {
		if sends[mb] < n {
			t.Errorf("mailbox %s: the truth has %d envelopes of the schedule to it, the observer record %d Sends", mb, n, sends[mb])
		}
	}
	for name, n := range perUser {
		got := sends[users[name].IntroMailbox]
		for _, c := range convs {
			for _, mb := range c.Mailboxes[name] {
				if mb != users[name].IntroMailbox {
					got += sends[mb]
				}
			}
		}
		if got < n {
			t.Errorf("%s: the truth has %d envelopes to them, the observer record %d Sends to their mailboxes", name, n, got)
		}
	}
}
