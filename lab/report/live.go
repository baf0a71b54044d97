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
	// real time; Window (the SDA's) is LagP90: the server knows its own
	// processing time.
	LagMedian, LagP90, Window time.Duration
	Summary                   score.Summary
	// Epoch is sda-epoch's figure on the same record, its epoch Window.
	Epoch score.Summary
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
		Scenario   string  `json:"scenario"`
		Users      int     `json:"users"`
		Speed      float64 `json:"speed"`
		RunStartNS int64   `json:"run_start_ns"`
		Texts      int     `json:"texts"`
		Lost       int     `json:"lost"`
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
	l := &Live{Dir: dir, Scenario: m.Scenario, Users: m.Users, Speed: m.Speed, Texts: m.Texts, Lost: m.Lost,
		LagMedian: lags[len(lags)/2], LagP90: lags[len(lags)*9/10]}
	l.Window = l.LagP90
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
	return l, nil
}
