package scenario

import (
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestLabScenarioVectors parses every good_ vector and refuses every
// fail_ one with ErrInvalid.
func TestLabScenarioVectors(t *testing.T) {
	files, err := filepath.Glob("testdata/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no vectors: %v", err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		base := filepath.Base(f)
		sc, err := Parse(raw)
		switch {
		case strings.HasPrefix(base, "good_"):
			if err != nil {
				t.Errorf("%s: %v", base, err)
				continue
			}
			if _, err := sc.Generate(1); err != nil {
				t.Errorf("%s: generate: %v", base, err)
			}
		case strings.HasPrefix(base, "fail_"):
			if err == nil {
				t.Errorf("%s: accepted", base)
			} else if !errors.Is(err, ErrInvalid) {
				t.Errorf("%s: %v does not wrap ErrInvalid", base, err)
			}
		default:
			t.Errorf("%s: neither good_ nor fail_", base)
		}
	}
}

// TestLabScenariosCheckedIn parses every scenario under lab/scenarios and
// checks what each claims of itself.
func TestLabScenariosCheckedIn(t *testing.T) {
	files, err := filepath.Glob("../scenarios/*.toml")
	if err != nil || len(files) < 6 {
		t.Fatalf("want at least 6 scenarios, got %d (%v)", len(files), err)
	}
	byName := map[string]*Scenario{}
	for _, f := range files {
		sc, err := Load(f)
		if err != nil {
			t.Fatal(err)
		}
		if want := strings.TrimSuffix(filepath.Base(f), ".toml"); sc.Name != want {
			t.Errorf("%s: name %q, want the file's name", f, sc.Name)
		}
		byName[sc.Name] = sc
	}
	m := byName["martiny-naive"]
	if m == nil || !m.Naive || m.PerConversation() || !m.Receipts.Enabled || m.Receipts.Delay.Dist != "fixed" ||
		m.Receipts.Delay.Mean.Duration != 500*time.Millisecond || m.Epoch.Duration != time.Second || m.Timing.RatePerDay != 50 {
		t.Errorf("martiny-naive is not Martiny et al.'s setting: %+v", m)
	}
	// martiny-crowd is martiny-naive at a live size with the crowd kept:
	// the epoch scaled by (10^6/users)^(1/3), to the second, the receipt
	// delay half of it, everything else martiny-naive's (docs/research.md,
	// "The live figure, scaled by the crowd").
	if c := byName["martiny-crowd"]; c == nil {
		t.Error("martiny-crowd is missing")
	} else {
		want := time.Duration(math.Round(math.Cbrt(1e6/float64(c.Users)))) * m.Epoch.Duration
		if !c.Naive || c.Epoch.Duration != want || c.Receipts.Delay.Dist != "fixed" || c.Receipts.Delay.Mean.Duration != want/2 ||
			!reflect.DeepEqual(c.Timing, m.Timing) || c.Graph != m.Graph || c.Traffic != m.Traffic || !reflect.DeepEqual(c.Sizes, m.Sizes) {
			t.Errorf("martiny-crowd is not martiny-naive with the epoch scaled to %v for %d users: %+v", want, c.Users, c)
		}
	}
	d := byName["qpc-default"]
	if d == nil || d.Naive || !d.PerConversation() || d.Cover.RatePerDay != 432 || d.Receipts.Delay.Dist != "exp" {
		t.Errorf("qpc-default is not qpc's defaults: %+v", d)
	}
	// Each defence alone differs from martiny-naive in that defence only.
	for name, check := range map[string]func(*Scenario) bool{
		"defence-per-conv-mailboxes": func(s *Scenario) bool {
			return s.PerConversation() && s.Cover.RatePerDay == 0 && s.Receipts.Delay == m.Receipts.Delay
		},
		"defence-receipts-jittered": func(s *Scenario) bool {
			return !s.PerConversation() && s.Cover.RatePerDay == 0 && s.Receipts.Delay.Dist == "exp"
		},
		"defence-receipts-off": func(s *Scenario) bool { return !s.PerConversation() && s.Cover.RatePerDay == 0 && !s.Receipts.Enabled },
		"defence-cover": func(s *Scenario) bool {
			return !s.PerConversation() && s.Cover.RatePerDay > 0 && s.Receipts.Delay == m.Receipts.Delay
		},
	} {
		s := byName[name]
		if s == nil || !check(s) {
			t.Errorf("%s does not have its one defence alone: %+v", name, s)
			continue
		}
		if s.Users != m.Users || s.Timing.RatePerDay != m.Timing.RatePerDay || s.Graph != m.Graph || s.Duration != m.Duration {
			t.Errorf("%s's population or traffic differs from martiny-naive's", name)
		}
	}
}

// TestLabScheduleReproducible: one scenario and seed give one schedule;
// another seed another.
func TestLabScheduleReproducible(t *testing.T) {
	raw, err := os.ReadFile("testdata/good_full.toml")
	if err != nil {
		t.Fatal(err)
	}
	sc, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	a, err := sc.Generate(7)
	if err != nil {
		t.Fatal(err)
	}
	b, err := sc.Generate(7)
	if err != nil {
		t.Fatal(err)
	}
	c, err := sc.Generate(8)
	if err != nil {
		t.Fatal(err)
	}
	if a.Hash() != b.Hash() {
		t.Error("the same seed gave two schedules")
	}
	if a.Hash() == c.Hash() {
		t.Error("two seeds gave one schedule")
	}
	if len(a.Messages) == 0 {
		t.Fatal("no messages")
	}
	// What the schedule promises: sorted, within the run, from members.
	var last time.Duration
	replies := 0
	for _, m := range a.Messages {
		if m.At < last || m.At >= sc.Duration.Duration {
			t.Fatalf("%s at %v out of order or past the run", m.ID, m.At)
		}
		last = m.At
		in := false
		for _, u := range a.Convs[m.Conv].Members {
			in = in || u == m.From
		}
		if !in {
			t.Fatalf("%s from a non-member", m.ID)
		}
		if m.Size < sc.Sizes.Min || m.Size > sc.Sizes.Max {
			t.Fatalf("%s size %d", m.ID, m.Size)
		}
		if m.Reply > 0 {
			replies++
		}
	}
	if replies == 0 {
		t.Error("reply_prob 0.6 gave no replies")
	}
	// The rate: 40 users × 20/day × 12 h, with bursts and replies on top.
	if base := 40 * 20 / 2; len(a.Messages) < base*8/10 {
		t.Errorf("%d messages, want at least about %d", len(a.Messages), base)
	}
}

// TestLabScheduleRate: a flat Poisson process gives its rate.
func TestLabScheduleRate(t *testing.T) {
	sc, err := Parse([]byte("name = \"rate\"\nusers = 200\n[timing]\nrate_per_day = 50\n"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := sc.Generate(3)
	if err != nil {
		t.Fatal(err)
	}
	// 10,000 expected; a Poisson count's sd is 100.
	if n := len(s.Messages); n < 9500 || n > 10500 {
		t.Errorf("%d messages in a day of 200 users at 50/day", n)
	}
}

// FuzzParse: a scenario file is input a researcher types; any bytes get a
// scenario or an ErrInvalid, and what parses generates a schedule.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.toml")
	for _, p := range files {
		if raw, err := os.ReadFile(p); err == nil {
			f.Add(raw)
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		sc, err := Parse(raw)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		// Keep the fuzzer's schedules small.
		if sc.Users > 1000 || float64(sc.Users)*sc.Timing.RatePerDay*sc.Duration.Hours()/24 > 20000 || sc.Graph.Groups > 1000 {
			return
		}
		if _, err := sc.Generate(1); err != nil {
			t.Fatalf("a valid scenario did not generate: %v", err)
		}
	})
}

// TestLabScenarioTraffic checks the correlated background of [traffic]:
// correlate turns the stated fractions of new messages into answers (the
// other member writes) and repeats (the same writer) in an earlier
// message's conversation, over a chance recurrence of about 1 % (10,000
// messages in 500,000 direct chats); and a scenario without [traffic]
// has the same schedule as with explicit zeros (no draw is added).
func TestLabScenarioTraffic(t *testing.T) {
	const tol = 0.02
	convs := make([]Conv, 500_000)
	for i := range convs {
		convs[i] = Conv{Members: []int{2 * i, 2*i + 1}}
	}
	for _, c := range []struct{ replies, repeats float64 }{{0.25, 0}, {0, 0.25}, {0.25, 0.25}, {0, 0}} {
		rng := rand.New(rand.NewPCG(3, 4))
		out := make([]pending, 10_000)
		for i := range out {
			ci := rng.IntN(len(convs))
			out[i] = pending{at: time.Duration(i) * time.Second, from: convs[ci].Members[rng.IntN(2)], conv: ci}
		}
		correlate(rng, out, convs, c.replies, c.repeats)
		seen := map[[2]int]bool{} // (writer, conversation)
		var same, reverse, either int
		for _, m := range out {
			peer := otherMember(rng, convs[m.conv].Members, m.from)
			s, r := seen[[2]int{m.from, m.conv}], seen[[2]int{peer, m.conv}]
			if s {
				same++
			}
			if r {
				reverse++
			}
			if s || r {
				either++
			}
			seen[[2]int{m.from, m.conv}] = true
		}
		f := func(n int) float64 { return float64(n) / float64(len(out)) }
		t.Logf("replies %g repeats %g: the writer wrote there before %.3f, the peer %.3f, either %.3f", c.replies, c.repeats, f(same), f(reverse), f(either))
		// An answer to an answer repeats the first: an answer is a message
		// whose reverse came before, a repeat one whose own direction did,
		// and what recurs is either.
		if got := f(either); math.Abs(got-(c.replies+c.repeats)) > tol {
			t.Errorf("replies %g repeats %g: %.3f of messages recur in an earlier conversation, want %g ± %g", c.replies, c.repeats, got, c.replies+c.repeats, tol)
		}
		if c.replies == 0 && math.Abs(f(same)-c.repeats) > tol {
			t.Errorf("repeats: %.3f, want %g ± %g", f(same), c.repeats, tol)
		}
		if c.repeats == 0 && math.Abs(f(reverse)-c.replies) > tol {
			t.Errorf("replies: %.3f, want %g ± %g", f(reverse), c.replies, tol)
		}
	}
	const base = "name = \"t\"\nusers = 50\nduration = \"2h\"\n"
	a, err := Parse([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse([]byte(base + "[traffic]\nreplies = 0\nrepeats = 0\nstray_receipts = 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	sa, _ := a.Generate(3)
	sb, _ := b.Generate(3)
	if len(sa.Messages) == 0 || sa.Hash() != sb.Hash() {
		t.Error("explicit zero traffic changes the schedule")
	}
}
