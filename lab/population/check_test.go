package population

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/quicprochat/qpc/lab/record"
)

// checkAgainstObserver: every text and receipt of the truth shows in the
// observer record as a Send to one of its recipient's mailboxes of that
// conversation, at most as many as the record holds per mailbox.
func checkAgainstObserver(t *testing.T, out string, users map[string]*record.TruthUser, convs map[string]*record.TruthConv, msgs []*record.TruthMessage) {
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
	want := map[string]int{} // receive ID -> envelopes the truth says went there
	for _, m := range msgs {
		if m.Kind == record.MsgCover {
			continue
		}
		c := convs[m.Conv]
		if c == nil {
			t.Fatalf("%s in an unknown conversation %q", m.Msg, m.Conv)
		}
		for _, to := range m.To {
			boxes := c.Mailboxes[to]
			if len(boxes) == 0 {
				t.Fatalf("%s to %s, who has no mailbox in %s", m.Msg, to, m.Conv)
			}
			want[boxes[len(boxes)-1]]++
		}
	}
	for mb, n := range want {
		if sends[mb] < n {
			t.Errorf("mailbox %s: the truth has %d envelopes to it, the observer record %d Sends", mb, n, sends[mb])
		}
	}
}
