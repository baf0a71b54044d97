package report

import (
	"math"
	"testing"
)

// The privacy regression (issue 19, item 6): a small seeded trace-mode
// population of 2,000 users, 10 target pairs writing every 5 minutes for
// 8 hours (about 100 texts per target), background 50 texts per user per
// day. The server's SDA (Martiny et al., with receipts) must link naive
// mode within 5 texts (median over targets) and must not link qpc's
// defaults (per-conversation mailboxes, receipts off, cover at 0.005/s)
// for any target within the run.
const (
	privUsers    = 2000
	privHot      = 10
	privInterval = 300 * second
	privDuration = 8 * 3600 * second
	// privNaiveMax is the most texts the SDA may need in naive mode.
	privNaiveMax = 5
)

func privacyCase(t *testing.T, defence string) *Outcome {
	t.Helper()
	cases, err := Defences(privUsers, privHot, privInterval, privDuration, 19)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		if c.Defence == defence {
			o, err := RunTrace(c, []string{"sda", "intersection", "linking"}, false)
			if err != nil {
				t.Fatal(err)
			}
			return o
		}
	}
	t.Fatalf("no case %q", defence)
	return nil
}

func TestPrivacySDANaiveLinks(t *testing.T) {
	o := privacyCase(t, "naive")
	s := o.Summaries[0]
	if s.Attack != "sda" {
		t.Fatalf("first summary is %q", s.Attack)
	}
	t.Logf("naive: SDA links %d/%d targets, median %.0f texts of %.0f received", s.Linked, s.Targets, s.Median, s.Messages)
	if s.Median > privNaiveMax || s.Linked < s.Targets*3/4 {
		t.Fatalf("naive mode: the SDA should link within %d texts; median %v, %d/%d linked", privNaiveMax, s.Median, s.Linked, s.Targets)
	}
}

func TestPrivacySDADefaultsDoNotLink(t *testing.T) {
	o := privacyCase(t, "qpc defaults (all)")
	for _, s := range o.Summaries {
		t.Logf("qpc defaults: %s links %d/%d targets (median %v) within %.0f texts each", s.Attack, s.Linked, s.Targets, s.Median, s.Messages)
		if s.Messages < 50 {
			t.Fatalf("targets received only %.0f texts: the run is too short to say anything", s.Messages)
		}
		if s.Linked > 0 || !math.IsInf(s.Median, 1) {
			t.Errorf("%s linked %d of %d targets on qpc's defaults", s.Attack, s.Linked, s.Targets)
		}
	}
}
