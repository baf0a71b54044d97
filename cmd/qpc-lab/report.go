package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/quicprochat/qpc/lab/attack/score"
	"github.com/quicprochat/qpc/lab/report"
)

func init() {
	subcommands["report"] = subcommand{summary: "run every defence in trace mode and write report.md, figures.csv, cdf.png", run: runReport}
}

func runReport(_ context.Context, args []string, out, errOut io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fs.SetOutput(errOut)
	dir := fs.String("out", "", "directory to write the report into")
	seed := fs.Uint64("seed", 1, "seed")
	users := fs.Int("users", 10000, "users")
	hot := fs.Int("hot", 20, "target pairs")
	interval := fs.Duration("interval", 300*time.Second, "mean time between a target pair's texts, each way")
	duration := fs.Duration("duration", 20*time.Hour, "modelled time")
	headline := fs.Int("headline", 0, "also run naive mode at Martiny et al.'s parameters with this many users (their 10^6), SDA only")
	headDur := fs.Duration("headline-duration", 2*time.Hour, "modelled time of the headline run")
	traffic := fs.String("headline-traffic", report.TrafficPaper, "the headline's traffic model: paper (Martiny et al.'s simulation: a third of receipts stray, a quarter of background replies, a quarter repeats) or lab (every receipt delivered, independent background)")
	live := fs.String("live", "", "a live run's directory (qpc-lab run -out): add its SDA figure (with -headline)")
	liveOnly := fs.Bool("live-only", false, "with -live: write the live run's section alone (live-<scenario>.md), no trace cases")
	attacks := fs.String("attacks", "sda,intersection,linking", "attacks to run (comma-separated)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return fmt.Errorf("report: -out is required")
	}
	if *liveOnly {
		if *live == "" {
			return fmt.Errorf("report: -live-only needs -live")
		}
		l, err := report.WriteLive(*dir, *live)
		if err != nil {
			return err
		}
		for _, s := range []score.Summary{l.Epoch, l.Summary} {
			fmt.Fprintf(out, "live %-9s linked %d/%d median %v of %v texts (window %v)\n", s.Attack, s.Linked, s.Targets, s.Median, s.Messages, l.Window)
		}
		return nil
	}
	outs, err := report.Write(report.Config{Dir: *dir, Seed: *seed, Users: *users, Hot: *hot,
		Interval: int64(*interval), Duration: int64(*duration), Attacks: strings.Split(*attacks, ","),
		Headline: *headline, HeadlineDuration: int64(*headDur), HeadlineTraffic: *traffic, Live: *live})
	if err != nil {
		return err
	}
	for _, o := range outs {
		for _, s := range o.Summaries {
			fmt.Fprintf(out, "%-38s %-13s linked %d/%d median %v of %v texts\n", o.Case.Defence, s.Attack, s.Linked, s.Targets, s.Median, s.Messages)
		}
	}
	return nil
}
