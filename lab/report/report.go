// Package report runs the lab's defence cases (trace mode) and writes the
// report: Markdown, a CSV of every figure and PNG plots. Call Write with
// Config; cmd/qpc-lab report is its command line.
package report

import (
	"encoding/csv"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/quicprochat/qpc/lab/attack/score"
	"github.com/quicprochat/qpc/lab/trace"
)

// Config is one report.
type Config struct {
	Dir      string
	Seed     uint64
	Users    int
	Hot      int
	Interval int64 // ns between a hot pair's texts, each direction
	Duration int64
	Attacks  []string
	// Headline, when above 0, adds naive mode at Martiny et al.'s
	// parameters with that many users for HeadlineDuration (SDA only):
	// their simulation has 10^6 users.
	Headline         int
	HeadlineDuration int64
	// HeadlineTraffic is the headline's traffic model: TrafficPaper
	// (Martiny et al.'s simulation, martiny-naive.toml's [traffic]), the
	// default when empty, or TrafficLab (every receipt delivered,
	// independent background).
	HeadlineTraffic string
	// Live, when set, is a live run's directory (qpc-lab run -out) whose
	// SDA figure the report adds (RunLive).
	Live string
}

// Write runs every defence case and writes report.md, figures.csv and
// cdf.png into c.Dir.
func Write(c Config) ([]*Outcome, error) {
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	var outs []*Outcome
	cases, err := Defences(c.Users, c.Hot, c.Interval, c.Duration, c.Seed)
	if err != nil {
		return nil, err
	}
	for _, cs := range cases {
		o, err := RunTrace(cs, c.Attacks, false)
		if err != nil {
			return nil, fmt.Errorf("report: %s: %w", cs.Defence, err)
		}
		outs = append(outs, o)
	}
	var head *Outcome
	if c.Headline > 0 {
		p, err := Martiny(c.Headline, c.Hot, c.Interval, c.HeadlineDuration, c.Seed)
		if err != nil {
			return nil, err
		}
		cs := Case{Defence: "naive, Martiny et al.'s scale", Params: p}
		switch c.HeadlineTraffic {
		case TrafficLab:
			cs.Params = trace.LabTraffic(cs.Params)
		case "", TrafficPaper:
			cs.Defence += ", their traffic"
		default:
			return nil, fmt.Errorf("report: headline traffic %q: want %q or %q", c.HeadlineTraffic, TrafficLab, TrafficPaper)
		}
		o, err := RunTrace(cs, []string{"sda", "sda-epoch"}, false)
		if err != nil {
			return nil, fmt.Errorf("report: headline: %w", err)
		}
		head = o
	}
	var live *Live
	if c.Live != "" {
		l, err := RunLive(c.Live)
		if err != nil {
			return nil, err
		}
		live = l
	}
	all := outs
	if head != nil {
		all = append(slices.Clone(outs), head)
	}
	if err := writeCSV(filepath.Join(c.Dir, "figures.csv"), all); err != nil {
		return nil, err
	}
	if err := plotCDF(filepath.Join(c.Dir, "cdf.png"), outs); err != nil {
		return nil, err
	}
	return all, writeMD(filepath.Join(c.Dir, "report.md"), c, outs, head, live)
}

func fmtF(x float64) string {
	if math.IsInf(x, 1) {
		return "never"
	}
	return strconv.FormatFloat(x, 'f', -1, 64)
}

func writeCSV(path string, outs []*Outcome) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	w := csv.NewWriter(f)
	_ = w.Write([]string{"defence", "attack", "level", "targets", "linked", "median_texts_to_link", "median_texts_received", "precision", "recall", "tpr_at_fpr_0.01", "entropy_bits", "events"})
	for _, o := range outs {
		for _, s := range o.Summaries {
			_ = w.Write([]string{o.Case.Defence, s.Attack, string(s.Level), strconv.Itoa(s.Targets), strconv.Itoa(s.Linked), fmtF(s.Median), fmtF(s.Messages),
				fmt.Sprintf("%.3f", s.Precision), fmt.Sprintf("%.3f", s.Recall), fmt.Sprintf("%.3f", s.TPR), fmt.Sprintf("%.2f", s.Entropy), strconv.FormatInt(o.Events, 10)})
		}
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return fmt.Errorf("report: %w", err)
	}
	return f.Close()
}

var palette = []color.RGBA{{0xd6, 0x27, 0x28, 0xff}, {0xff, 0x7f, 0x0e, 0xff}, {0x2c, 0xa0, 0x2c, 0xff}, {0x1f, 0x77, 0xb4, 0xff}, {0x94, 0x67, 0xbd, 0xff}, {0x17, 0xbe, 0xcf, 0xff}, {0x8c, 0x56, 0x4b, 0xff}}

// plotCDF plots, per defence, the fraction of targets the SDA has linked
// against the texts they received.
func plotCDF(path string, outs []*Outcome) error {
	p := plot.New()
	p.Title.Text = "SDA (Martiny et al.): targets linked vs texts received"
	p.X.Label.Text = "texts the target received (log scale)"
	p.Y.Label.Text = "fraction of targets linked"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{}
	p.Y.Min, p.Y.Max = 0, 1
	p.Add(plotter.NewGrid())
	xs := []float64{1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700, 1000}
	for i, o := range outs {
		var sda *score.Summary
		for j := range o.Summaries {
			if o.Summaries[j].Attack == "sda" {
				sda = &o.Summaries[j]
			}
		}
		if sda == nil {
			continue
		}
		ys := score.CDF(sda.ToLink, xs)
		var pts plotter.XYs
		for k, x := range xs {
			if x <= math.Max(sda.Messages, 1) {
				pts = append(pts, plotter.XY{X: x, Y: ys[k]})
			}
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return fmt.Errorf("report: plot: %w", err)
		}
		l.Color = palette[i%len(palette)]
		l.Width = vg.Points(1.5)
		l.Dashes = []vg.Length{vg.Points(float64(2 * (i % 3))), vg.Points(float64(2 * (i % 3)))}
		if i%3 == 0 {
			l.Dashes = nil
		}
		p.Add(l)
		p.Legend.Add(o.Case.Defence, l)
	}
	p.Legend.Top, p.Legend.Left = true, true
	if err := p.Save(18*vg.Centimeter, 11*vg.Centimeter, path); err != nil {
		return fmt.Errorf("report: plot: %w", err)
	}
	return nil
}

func writeMD(path string, c Config, outs []*Outcome, head *Outcome, live *Live) error {
	var b strings.Builder
	hflags := ""
	if head != nil {
		hflags = fmt.Sprintf(" -headline %d -headline-duration %s", c.Headline, dur(c.HeadlineDuration))
		if c.HeadlineTraffic == TrafficLab {
			hflags += " -headline-traffic " + TrafficLab
		}
	}
	if live != nil {
		hflags += " -live " + filepath.ToSlash(live.Dir)
	}
	fmt.Fprintf(&b, "# qpc-lab report (trace mode)\n\nGenerated by `qpc-lab report -out %s -seed %d -users %d -hot %d -interval %s -duration %s%s`; do not edit.\n\n",
		filepath.Base(c.Dir), c.Seed, c.Users, c.Hot, dur(c.Interval), dur(c.Duration), hflags)
	if head != nil {
		s, se := head.Summaries[0], head.Summaries[1]
		fmt.Fprintf(&b, "## Headline: naive mode at Martiny et al.'s parameters\n\n"+
			"%d users, %d background conversations each at %g texts per user per day (lab/scenarios/%s.toml), receipts 0.5 s after delivery, one mailbox per user; "+
			"%d target pairs writing every %s each way, for %s (%d events). %s Martiny et al. (NDSS 2021) link in about 5 texts.\n\n"+
			"| SDA | linked | median texts to link | against their ~5 |\n|---|---|---|---|\n"+
			"| counted in fixed 1-s epochs, as the paper counts (`sda-epoch`: the target's epoch and the next, one random non-target range subtracted) | %d/%d | **%s** | %s |\n"+
			"| delivery-anchored (`sda`: a 1-s window opened at each delivery, the expected background subtracted; the stronger attacker) | %d/%d | **%s** | %s |\n\n",
			c.Headline, head.Case.Params.Contacts, head.Case.Params.RatePerDay, MartinyScenario, c.Hot, dur(c.Interval), dur(c.HeadlineDuration), head.Events, trafficText(head.Case.Params),
			se.Linked, se.Targets, fmtF(se.Median), against5(se.Median), s.Linked, s.Targets, fmtF(s.Median), against5(s.Median))
		if live != nil {
			writeLive(&b, live)
		}
		b.WriteString("## Every defence\n\n")
	}
	fmt.Fprintf(&b, "%d users, %d background conversations each at %g texts per user per day (lab/scenarios/%s.toml, on the lab's traffic); %d target pairs writing every %s each way, for %s. "+
		"The attacker is the server; a target is linked when its top guess is, uniquely, a handle (intro mailbox) the target talks to. "+
		"\"Texts to link\" is the median over targets of the texts the target had received by then; never = not within the run.\n\n",
		c.Users, outs[0].Case.Params.Contacts, outs[0].Case.Params.RatePerDay, MartinyScenario, c.Hot, dur(c.Interval), dur(c.Duration))
	b.WriteString("![SDA CDF](cdf.png)\n\n| defence | attack | linked | median texts to link | texts received (median) | precision | TPR at 1% FPR | entropy (bits) |\n|---|---|---|---|---|---|---|---|\n")
	var naive float64
	for _, o := range outs {
		for _, s := range o.Summaries {
			if o.Case.Defence == "naive" && s.Attack == "sda" {
				naive = s.Median
			}
			fmt.Fprintf(&b, "| %s | %s | %d/%d | %s | %s | %.2f | %.2f | %.1f |\n", o.Case.Defence, s.Attack, s.Linked, s.Targets, fmtF(s.Median), fmtF(s.Messages), s.Precision, s.TPR, s.Entropy)
		}
	}
	b.WriteString("\nSDA, texts to link against naive mode:\n\n")
	for _, o := range outs {
		for _, s := range o.Summaries {
			if s.Attack != "sda" {
				continue
			}
			ratio := "never within the run (≥ " + fmtF(s.Messages/math.Max(naive, 1)) + "×)"
			if !math.IsInf(s.Median, 1) {
				ratio = fmtF(math.Round(s.Median/math.Max(naive, 1)*10)/10) + "×"
			}
			fmt.Fprintf(&b, "- %s: %s\n", o.Case.Defence, ratio)
		}
	}
	b.WriteString("\nEvery figure is in figures.csv.\n")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

// writeLive writes the live run's figures beside trace mode of its own
// schedule.
func writeLive(b *strings.Builder, live *Live) {
	traffic := "the lab's traffic"
	if live.Traffic == TrafficPaper {
		traffic = fmt.Sprintf("the paper's traffic (%d stray receipts; correlated background in the schedule)", live.Strays)
	}
	fmt.Fprintf(b, "### Live, on the real server\n\nScenario %s, %d users at %g×, %s: %d texts (%d lost). Receipts followed their texts after a median of %v and a 90th percentile of %v real time; "+
		"the live SDA's window (and `sda-epoch`'s epoch) is the scenario's epoch of %v in real time (%v), or that 90th percentile when it is longer, as the server knows its own processing time. Every user is a target.\n\n",
		live.Scenario, live.Users, live.Speed, traffic, live.Texts, live.Lost, live.LagMedian.Round(time.Millisecond), live.LagP90.Round(time.Millisecond),
		live.ScenarioEpoch, time.Duration(float64(live.ScenarioEpoch)/live.Speed).Round(time.Millisecond))
	b.WriteString("| record | SDA | linked | median texts to link | texts received (median) | against their ~5 |\n|---|---|---|---|---|---|\n")
	row := func(rec, attack string, s score.Summary) {
		fmt.Fprintf(b, "| %s | %s | %d/%d | **%s** | %s | %s |\n", rec, attack, s.Linked, s.Targets, fmtF(s.Median), fmtF(s.Messages), against5(s.Median))
	}
	w := live.Window.Round(time.Millisecond)
	row("live", fmt.Sprintf("`sda-epoch`, epoch %v real", w), live.Epoch)
	row("live", fmt.Sprintf("`sda`, window %v real", w), live.Summary)
	if sm := live.Same; sm != nil {
		row("trace of the same schedule, the run's receipt lags", fmt.Sprintf("`sda-epoch`, epoch %v real", w), sm.LaggedEpoch)
		row("trace of the same schedule, the run's receipt lags", fmt.Sprintf("`sda`, window %v real", w), sm.Lagged)
		row(fmt.Sprintf("trace of the same schedule, the scenario's own timing (uncompressed, receipts %v after delivery)", live.ReceiptDelay), fmt.Sprintf("`sda-epoch`, %v epochs", live.ScenarioEpoch), sm.PaperEpoch)
		row("trace of the same schedule, the scenario's own timing", fmt.Sprintf("`sda`, %v window", live.ScenarioEpoch), sm.Paper)
	}
	b.WriteString("\n")
}

// trafficText says which traffic model the headline ran.
func trafficText(p trace.Params) string {
	if p.StrayReceipts == 0 && p.BgReplies == 0 && p.BgRepeats == 0 {
		return "The lab's traffic: every receipt reaches the text's sender; background conversations are independent (Poisson)."
	}
	return fmt.Sprintf("Their simulation's traffic (`-headline-traffic paper`, the default): %.0f%% of receipts go from a random user to a random user instead of to the text's sender; "+
		"%.0f%% of background texts reply to and %.0f%% repeat an earlier background text.", 100*p.StrayReceipts, 100*p.BgReplies, 100*p.BgRepeats)
}

// against5 is a median against Martiny et al.'s ~5 texts.
func against5(m float64) string {
	if math.IsInf(m, 1) {
		return "never"
	}
	return strconv.FormatFloat(m/5, 'f', -1, 64) + "×"
}

func dur(ns int64) string { return strconv.FormatInt(ns/second, 10) + "s" }

// WriteLive scores the live run in liveDir (RunLive) and writes its
// section alone, as live-<scenario>.md in dir, leaving the trace-mode
// report (report.md, figures.csv, cdf.png) as it is: a live run is the
// machine's and takes its own command, while the trace figures are the
// same on every machine for the seed.
func WriteLive(dir, liveDir string) (*Live, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	l, err := RunLive(liveDir)
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# qpc-lab live run: %s\n\nGenerated by `qpc-lab report -out %s -live %s -live-only`; do not edit.\n\n",
		l.Scenario, filepath.Base(dir), filepath.ToSlash(liveDir))
	writeLive(&b, l)
	if err := os.WriteFile(filepath.Join(dir, "live-"+l.Scenario+".md"), []byte(b.String()), 0o644); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	return l, nil
}
