package report

import (
	"fmt"

	"github.com/quicprochat/qpc/lab/attack"
	"github.com/quicprochat/qpc/lab/attack/score"
	"github.com/quicprochat/qpc/lab/scenarios"
	"github.com/quicprochat/qpc/lab/trace"
)

const second = int64(1e9)

// Traffic models of the headline (Config.HeadlineTraffic).
const (
	// TrafficLab is the lab's model: every receipt reaches the text's
	// sender, background conversations are independent (Poisson):
	// trace.LabTraffic.
	TrafficLab = "lab"
	// TrafficPaper is Martiny et al.'s simulation's, as
	// lab/scenarios/martiny-naive.toml's [traffic] says.
	TrafficPaper = "paper"
)

// Case is one defence setting of the trace model.
type Case struct {
	Defence string
	Params  trace.Params
}

// MartinyScenario is the checked-in scenario the trace-mode cases model
// (lab/scenarios): the one file a live naive run plays too.
const MartinyScenario = "martiny-naive"

// Martiny is naive mode at Martiny et al.'s parameters, the trace model
// of lab/scenarios/martiny-naive.toml (trace.FromScenario) with the
// caller's users, duration and seed: one mailbox per user, 50 messages
// per user per day, delivery receipts 0.5 s after delivery, the paper's
// traffic ([traffic]: stray receipts, correlated background). Hot pairs,
// the targets, write every interval on top.
func Martiny(users, hot int, interval, duration int64, seed uint64) (trace.Params, error) {
	sc, err := scenarios.Load(MartinyScenario)
	if err != nil {
		return trace.Params{}, fmt.Errorf("report: %w", err)
	}
	p, err := trace.FromScenario(sc, seed)
	if err != nil {
		return trace.Params{}, fmt.Errorf("report: %w", err)
	}
	p.Name, p.Users, p.Duration, p.Hot, p.HotInterval = "naive", users, duration, hot, interval
	return p, nil
}

// Defences are naive mode, each of qpc's defences alone, and qpc's
// defaults (all together): per-conversation mailboxes, receipts jittered
// (exponential, mean 30 s, at most 5 min: client/receipts.go), cover
// traffic at the rate the user guide recommends (0.005 per second). All
// run on the lab's traffic (trace.LabTraffic: every receipt reaches its
// writer, independent background), on which naive mode links fastest, so
// that a defence's ratio against naive mode is not flattered.
func Defences(users, hot int, interval, duration int64, seed uint64) ([]Case, error) {
	base, err := Martiny(users, hot, interval, duration, seed)
	if err != nil {
		return nil, err
	}
	base = trace.LabTraffic(base)
	jit := func(p trace.Params) trace.Params {
		p.Receipts, p.ReceiptMean, p.ReceiptMax = trace.ReceiptsJitter, 30*second, 300*second
		return p
	}
	off := func(p trace.Params) trace.Params { p.Receipts = trace.ReceiptsOff; return p }
	conv := func(p trace.Params) trace.Params { p.PerConvMailboxes = true; return p }
	cover := func(p trace.Params) trace.Params { p.CoverRate = 0.005; return p }
	return []Case{
		{"naive", base},
		{"receipts jittered", jit(base)},
		{"receipts off", off(base)},
		{"per-conversation mailboxes", conv(base)},
		{"cover traffic", cover(base)},
		{"qpc defaults (all)", cover(conv(off(base)))},
		{"qpc with receipts on (all, jittered)", cover(conv(jit(base)))},
	}, nil
}

// Outcome is one case run: each attack's result and its scores.
type Outcome struct {
	Case      Case
	Results   []attack.Result
	Summaries []score.Summary
	Events    int64
	Texts     int
}

// RunTrace generates the case's record and runs the attacks on it as it
// is generated (nothing is held but the attacks' state), then scores.
func RunTrace(c Case, attacks []string, mailboxTargets bool) (*Outcome, error) {
	// The attacker's public knowledge and targets do not depend on the
	// events; a zero-length run gives them.
	probe := c.Params
	probe.Duration = 1
	tr0, err := trace.Generate(probe, func(*attack.Event) error { return nil })
	if err != nil {
		return nil, err
	}
	opt := attack.Options{Identities: tr0.Identities(), Targets: tr0.HotHandles(), Attacks: attacks, Top: 50, Seed: c.Params.Seed}
	if mailboxTargets {
		opt.Targets = nil
		opt.TargetMailboxes = tr0.HotConvMailboxes()
	}
	run, err := attack.New(opt)
	if err != nil {
		return nil, err
	}
	var n int64
	tr, err := trace.Generate(c.Params, func(e *attack.Event) error { n++; run.Observe(e); return nil })
	if err != nil {
		return nil, err
	}
	o := &Outcome{Case: c, Results: run.Results(), Events: n, Texts: tr.Texts}
	lvl := score.Identity
	if mailboxTargets {
		lvl = score.Mailbox
	}
	for _, r := range o.Results {
		o.Summaries = append(o.Summaries, score.Score(r, tr, lvl))
	}
	return o, nil
}
