package report

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/quicprochat/qpc/lab/attack"
	"github.com/quicprochat/qpc/lab/attack/score"
	"github.com/quicprochat/qpc/lab/record"
	"github.com/quicprochat/qpc/lab/scenario"
	"github.com/quicprochat/qpc/lab/scenarios"
	"github.com/quicprochat/qpc/lab/trace"
)

// Live is the SDA's outcome on a live run (qpc-lab run's directory).
type Live struct {
	Dir      string
	Scenario string
	Users    int
	Speed    float64
	Texts    int
	Lost     int
	// LagMedian and LagP90 are the receipts' delays after their texts,
	// real time; Window (the SDA's, and sda-epoch's epoch) is the
	// scenario's epoch in real time (its epoch over the speed), or LagP90
	// when that is longer: the server knows its own processing time.
	LagMedian, LagP90, Window time.Duration
	// ScenarioEpoch is the scenario's epoch (simulated time) and
	// ReceiptDelay its receipt delay (simulated; 0 when the scenario is
	// not checked in).
	ScenarioEpoch, ReceiptDelay time.Duration
	Summary                     score.Summary
	// Epoch is sda-epoch's figure on the same record, its epoch Window.
	Epoch score.Summary
	// Stray receipts the run sent (the scenario's traffic.stray_receipts).
	Strays int
	// Traffic says the scenario's traffic: the paper's or the lab's.
	Traffic string
	// Same, when the run's scenario is checked in (lab/scenarios) and
	// its schedule is the run's: trace mode of the same schedule
	// (trace.FromSchedule), scored as the live record is.
	Same *SameSchedule
}

// SameSchedule is trace mode of a live run's own schedule: with the
// machine's receipt lags as the run measured them and the live window
// (what the live figure should be, if the trace models the run), and in
// the paper's timing (no compression, receipts 0.5 s after delivery,
// 1-s window and epochs: what the live population would give on a
// machine that takes no time).
type SameSchedule struct {
	Lagged, LaggedEpoch score.Summary
	Paper, PaperEpoch   score.Summary
}

// RunLive reads a live run's observer record, truth and manifest from
// dir and scores the SDA (both counts: sda with its window, sda-epoch
// with epochs of the same length) on the schedule's part of the record, every user
// a target, at the identity level.
func RunLive(dir string) (*Live, error) {
	b, err := os.ReadFile(filepath.Join(dir, "run.json"))
	if err != nil {
		return nil, fmt.Errorf("report: live: %w", err)
	}
	var m struct {
		Scenario     string  `json:"scenario"`
		Seed         int64   `json:"seed"`
		Users        int     `json:"users"`
		Speed        float64 `json:"speed"`
		EpochNS      int64   `json:"epoch_ns"`
		DurationNS   int64   `json:"duration_ns"`
		ScheduleHash string  `json:"schedule_hash"`
		RunStartNS   int64   `json:"run_start_ns"`
		Texts        int     `json:"texts"`
		Lost         int     `json:"lost"`
		Strays       int     `json:"stray_receipts"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("report: live: run.json: %w", err)
	}
	tf, err := os.Open(filepath.Join(dir, "truth.jsonl"))
	if err != nil {
		return nil, fmt.Errorf("report: live: %w", err)
	}
	_, lines, err := record.ReadTruth(tf)
	tf.Close()
	if err != nil {
		return nil, fmt.Errorf("report: live: truth: %w", err)
	}
	tb, err := score.FromRecord(lines, m.RunStartNS)
	if err != nil {
		return nil, err
	}
	lags := score.ReceiptLags(lines, m.RunStartNS)
	if len(lags) == 0 {
		return nil, fmt.Errorf("report: live: %s has no receipts to measure the window on", dir)
	}
	slices.Sort(lags)
	l := &Live{Dir: dir, Scenario: m.Scenario, Users: m.Users, Speed: m.Speed, Texts: m.Texts, Lost: m.Lost, Strays: m.Strays,
		LagMedian: lags[len(lags)/2], LagP90: lags[len(lags)*9/10], ScenarioEpoch: time.Duration(m.EpochNS)}
	l.Window = max(time.Duration(float64(m.EpochNS)/m.Speed), l.LagP90)
	opt := attack.Options{Identities: map[string]string{}, Attacks: []string{"sda", "sda-epoch"}, Window: int64(l.Window), Epoch: int64(l.Window), Top: 10}
	for _, x := range lines {
		if x.User != nil {
			opt.Identities[x.User.Handle] = x.User.IntroMailbox
			opt.Targets = append(opt.Targets, x.User.Handle)
		}
	}
	slices.Sort(opt.Targets)
	run, err := attack.New(opt)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(dir, "observer.jsonl"))
	if err != nil {
		return nil, fmt.Errorf("report: live: %w", err)
	}
	defer f.Close()
	err = attack.ReadObserver(f, func(e *attack.Event) error {
		if e.T >= m.RunStartNS {
			e.T -= m.RunStartNS
			run.Observe(e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("report: live: %w", err)
	}
	res := run.Results()
	l.Summary = score.Score(res[0], tb, score.Identity)
	l.Epoch = score.Score(res[1], tb, score.Identity)
	sc, err := scenarios.Load(m.Scenario)
	if err != nil {
		return l, nil // not a checked-in scenario: no trace of its schedule
	}
	l.Traffic = TrafficLab
	l.ReceiptDelay = sc.Receipts.Delay.Mean.Duration
	if sc.Traffic.StrayReceipts+sc.Traffic.Replies+sc.Traffic.Repeats > 0 {
		l.Traffic = TrafficPaper
	}
	sc.Users, sc.Speed, sc.Duration.Duration = m.Users, m.Speed, time.Duration(m.DurationNS)
	sched, err := sc.Generate(m.Seed)
	if err != nil || sched.Hash() != m.ScheduleHash {
		return l, nil // the file changed since the run
	}
	var same SameSchedule
	if same.Lagged, same.LaggedEpoch, err = traceSDA(sc, sched, trace.ScheduleOptions{Speed: m.Speed, Seed: uint64(m.Seed), ReceiptLags: lags}, int64(l.Window)); err != nil {
		return nil, err
	}
	if same.Paper, same.PaperEpoch, err = traceSDA(sc, sched, trace.ScheduleOptions{Speed: 1, Seed: uint64(m.Seed)}, int64(sc.Epoch.Duration)); err != nil {
		return nil, err
	}
	l.Same = &same
	return l, nil
}

// traceSDA runs the SDA (both counts, window and epoch w) on the trace of
// a schedule, every user a target, scored at the identity level.
func traceSDA(sc *scenario.Scenario, sched *scenario.Schedule, so trace.ScheduleOptions, w int64) (score.Summary, score.Summary, error) {
	_, ids, err := trace.FromSchedule(sc, sched, so, func(*attack.Event) error { return nil })
	if err != nil {
		return score.Summary{}, score.Summary{}, err
	}
	opt := attack.Options{Identities: ids, Attacks: []string{"sda", "sda-epoch"}, Window: w, Epoch: w, Top: 10}
	for h := range ids {
		opt.Targets = append(opt.Targets, h)
	}
	slices.Sort(opt.Targets)
	run, err := attack.New(opt)
	if err != nil {
		return score.Summary{}, score.Summary{}, err
	}
	tb, _, err := trace.FromSchedule(sc, sched, so, func(e *attack.Event) error { run.Observe(e); return nil })
	if err != nil {
		return score.Summary{}, score.Summary{}, err
	}
	res := run.Results()
	return score.Score(res[0], tb, score.Identity), score.Score(res[1], tb, score.Identity), nil
}

// Predict is the SDA (both counts) on trace mode of scenario sc's own
// schedule for seed, every user a target, scored at the identity level:
// what a live run of sc should give. Speed 0 (or 1) is the scenario's
// own timing (receipts at the scenario's delay after delivery, window and
// epoch sc.Epoch); a Speed above 1 compresses time as a live run does,
// each receipt following its text by the scenario's delay over the speed
// plus lag (the machine's), and the window and epoch are
// max(sc.Epoch/Speed, the receipts' delay), as RunLive sets them on a
// live record.
func Predict(sc *scenario.Scenario, seed uint64, speed float64, lag time.Duration) (sda, epoch score.Summary, err error) {
	sched, err := sc.Generate(int64(seed))
	if err != nil {
		return sda, epoch, fmt.Errorf("report: predict: %w", err)
	}
	so := trace.ScheduleOptions{Speed: 1, Seed: seed}
	w := sc.Epoch.Duration
	if speed > 1 {
		d := time.Duration(float64(sc.Receipts.Delay.Mean.Duration)/speed) + lag
		so.Speed, so.ReceiptLags = speed, []time.Duration{d}
		w = max(time.Duration(float64(w)/speed), d)
	}
	return traceSDA(sc, sched, so, int64(w))
}
