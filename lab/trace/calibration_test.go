package trace_test

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/quicprochat/qpc/lab/attack"
	"github.com/quicprochat/qpc/lab/attack/score"
	"github.com/quicprochat/qpc/lab/population"
	"github.com/quicprochat/qpc/lab/record"
	"github.com/quicprochat/qpc/lab/scenario"
	"github.com/quicprochat/qpc/lab/trace"
)

// calibScenario is martiny-naive scaled to a test the way
// martiny-crowd.toml scales it to a live run (docs/research.md, "The live
// figure, scaled by the crowd"): 20 users, two direct chats each, one
// mailbox per user, 15-s epochs and receipts half an epoch (7.5 s) after
// delivery; 40 minutes at 360 texts per user per day (about 10 texts
// received per user) at 60× (40 s of real time). The attacker's window is
// one epoch, 0.25 s real, in which a mailbox receives with probability
// about 0.12 (the texts and receipts of 360 a day over 15 s). The rate is
// the machine's: 20 users × 2 envelopes per text × 360 a day × 60 / 86,400
// is 10 envelopes a second, an eighth of what the machine passes quiet, so
// that a machine loaded by other work still keeps up and the receipts lag
// their texts by its scheduling delay (tens to a few hundred
// milliseconds), not by a queue that grows through the run (the first
// version, at 53 envelopes a second, lagged 2-7 s under a load average of
// 20 and its window, twice the lag, drowned the receipts in everyone's
// traffic).
const calibScenario = `
name = "calibration"
users = 20
duration = "40m"
speed = 60
epoch = "15s"
naive = true
[graph]
contacts = 2
[timing]
rate_per_day = 360
[receipts]
delay = { dist = "fixed", mean = "7500ms" }
`

// calibPaper is calibScenario with Martiny et al.'s simulated traffic, as
// martiny-naive.toml has it.
const calibPaper = calibScenario + `
[traffic]
stray_receipts = 0.3333333333333333
replies = 0.25
repeats = 0.25
`

const (
	calibSeed = 7
	// calibMedianRatio bounds live/trace (and trace/live) of the SDA's
	// median texts to link; calibLinkedDiff the difference of the
	// fractions of targets linked. See docs/research.md, "Trace mode and
	// calibration".
	calibMedianRatio = 2.0
	calibLinkedDiff  = 0.25
	// calibMedianSlack: at medians of a few texts a ratio says little
	// (1 against 2 is already 2×), so medians that differ by at most this
	// many texts also agree. Under CI's load one run gave live 1, trace 4
	// (20 targets, 22 texts each): 3 texts is 14 % of what a target
	// received.
	calibMedianSlack = 3
)

// TestLabCalibration runs one scenario live (real server, real clients,
// lab/population) and in trace mode from the same schedule
// (trace.FromSchedule), runs the SDA on both observer records with the
// same options, and checks that both give the same result within the
// stated tolerance.
//
// It runs the lab's own traffic (every receipt reaches its writer,
// independent conversations) and Martiny et al.'s ([traffic]: stray
// receipts, correlated background), which the live population plays and
// FromSchedule models, each a live run of about 40 s.
func TestLabCalibration(t *testing.T) {
	t.Run("lab traffic", func(t *testing.T) { calibrate(t, calibScenario) })
	t.Run("paper traffic", func(t *testing.T) { calibrate(t, calibPaper) })
}

func calibrate(t *testing.T, src string) {
	sc, err := scenario.Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	sched, err := sc.Generate(calibSeed)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
	defer cancel()
	m, err := population.Run(ctx, population.Options{Scenario: sc, Seed: calibSeed, Out: out, Drain: time.Second, Settle: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("live run: %d texts, %d receipts, %d lost; setup %.1fs, schedule %.1fs", m.Texts, m.Receipts, m.Lost, m.SetupSeconds, m.RunSeconds)
	if m.Lost != 0 {
		t.Fatalf("the live run lost %d of %d texts: it did not keep its schedule", m.Lost, m.Scheduled)
	}
	// The live run and the trace play the same stray receipts
	// (scenario.Strays): the live run replaced as many receipts as the
	// schedule's draws say, for the texts its clients had processed by
	// the end (all but the last few, under load). Which receipts depends
	// on the order the machine delivered near-simultaneous texts in; how
	// many does not.
	if f := sc.Traffic.StrayReceipts; f > 0 {
		const late = 10 // texts the clients may not have processed when the run ended
		d := scenario.NewStrays(sched, f)
		var cum []int // cum[n]: strays among the first n draws
		cum = append(cum, 0)
		for _, msg := range sched.Messages {
			if sched.Convs[msg.Conv].Group {
				continue
			}
			for range sched.Recipients(msg) {
				ok, _, _, _ := d.Next()
				cum = append(cum, cum[len(cum)-1])
				if ok {
					cum[len(cum)-1]++
				}
			}
		}
		n := len(cum) - 1
		t.Logf("stray receipts: %d receipts replaced live, %d drawn for the schedule's %d", m.Dropped, cum[n], n)
		if !slices.Contains(cum[max(n-late, 0):], m.Dropped) {
			t.Errorf("the live run replaced %d receipts with stray ones, the schedule's draws %d (%d..%d for its last %d texts unprocessed): it did not play the trace's strays",
				m.Dropped, cum[n], cum[max(n-late, 0)], cum[n], late)
		}
	}
	lines := readTruth(t, filepath.Join(out, population.FileTruth))
	live, err := score.FromRecord(lines, m.RunStartNS)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	var targets []string
	for _, x := range lines {
		if x.User != nil {
			ids[x.User.Handle] = x.User.IntroMailbox
			targets = append(targets, x.User.Handle)
		}
	}
	slices.Sort(targets)

	// The machine's receipt lag, measured on the live record: from a text's
	// Send to the Send of its receipt. The trace model takes it as given;
	// the attacker (the server) sees its own processing time and sets its
	// window to cover it.
	lags := score.ReceiptLags(lines, m.RunStartNS)
	if len(lags) < 20 {
		t.Fatalf("only %d receipts matched to their texts", len(lags))
	}
	slices.Sort(lags)
	p90 := lags[len(lags)*9/10]
	// The window is the scenario's epoch in real time, as report.RunLive
	// sets it, or twice the lag's 90th percentile if that is longer.
	window := max(time.Duration(float64(sc.Epoch.Duration)/m.Speed), 2*p90)
	t.Logf("receipt lag: median %v, p90 %v; SDA window %v", lags[len(lags)/2], p90, window)
	opt := attack.Options{Identities: ids, Targets: targets, Attacks: []string{"sda"}, Window: int64(window), Top: 10}

	runLive, err := attack.New(opt)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(out, population.FileObserver))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = attack.ReadObserver(f, func(e *attack.Event) error {
		if e.T < m.RunStartNS {
			return nil
		}
		e.T -= m.RunStartNS
		runLive.Observe(e)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sLive := score.Score(runLive.Results()[0], live, score.Identity)

	sTrace := traceSDA(t, sc, sched, opt, trace.ScheduleOptions{Speed: m.Speed, Seed: calibSeed, ReceiptLags: lags})
	// For the record: the model without the machine's lag (receipts at
	// the scenario's delay over the speed plus 2 ms), not asserted.
	sBare := traceSDA(t, sc, sched, opt, trace.ScheduleOptions{Speed: m.Speed, Seed: calibSeed})
	t.Logf("trace without the measured lag: SDA linked %d/%d, median %v", sBare.Linked, sBare.Targets, sBare.Median)

	fl, ft := float64(sLive.Linked)/float64(sLive.Targets), float64(sTrace.Linked)/float64(sTrace.Targets)
	t.Logf("live:  SDA linked %d/%d, median %v texts to link of %v received", sLive.Linked, sLive.Targets, sLive.Median, sLive.Messages)
	t.Logf("trace: SDA linked %d/%d, median %v texts to link of %v received", sTrace.Linked, sTrace.Targets, sTrace.Median, sTrace.Messages)
	if sLive.Messages != sTrace.Messages {
		t.Errorf("targets received a median of %v texts live and %v in the trace: the trace does not follow the schedule", sLive.Messages, sTrace.Messages)
	}
	if fl < 0.5 {
		t.Errorf("live: the SDA linked only %d of %d targets in naive mode; nothing to calibrate", sLive.Linked, sLive.Targets)
	}
	if math.Abs(fl-ft) > calibLinkedDiff {
		t.Errorf("fraction linked: live %.2f, trace %.2f, differ by more than %.2f", fl, ft, calibLinkedDiff)
	}
	if r := sLive.Median / sTrace.Median; !(r <= calibMedianRatio && r >= 1/calibMedianRatio) && math.Abs(sLive.Median-sTrace.Median) > calibMedianSlack {
		t.Errorf("median texts to link: live %v, trace %v, neither within %v× of each other nor within %d texts", sLive.Median, sTrace.Median, calibMedianRatio, calibMedianSlack)
	}
}

func readTruth(t *testing.T, path string) []record.Truth {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, lines, err := record.ReadTruth(f)
	if err != nil {
		t.Fatal(err)
	}
	return lines
}

// traceSDA generates the schedule's record in trace mode and scores the
// SDA on it, with opt but the trace's own identities (its mailbox IDs).
func traceSDA(t *testing.T, sc *scenario.Scenario, sched *scenario.Schedule, opt attack.Options, so trace.ScheduleOptions) score.Summary {
	t.Helper()
	_, ids, err := trace.FromSchedule(sc, sched, so, func(*attack.Event) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	opt.Identities = ids
	run, err := attack.New(opt)
	if err != nil {
		t.Fatal(err)
	}
	tr, _, err := trace.FromSchedule(sc, sched, so, func(e *attack.Event) error { run.Observe(e); return nil })
	if err != nil {
		t.Fatal(err)
	}
	return score.Score(run.Results()[0], tr, score.Identity)
}
