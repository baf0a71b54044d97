package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/quicprochat/qpc/lab/attack/score"
	"github.com/quicprochat/qpc/lab/report"
	"github.com/quicprochat/qpc/lab/scenario"
)

func init() {
	subcommands["predict"] = subcommand{summary: "the SDA on trace mode of a scenario's own schedule: what a live run of it should give", run: runPredict}
}

// runPredict is `qpc-lab predict <scenario.toml> [-seed N] [-users N]
// [-duration D] [-speed X -lag D]`.
func runPredict(_ context.Context, args []string, out, errOut io.Writer) error {
	fs := flag.NewFlagSet("qpc-lab predict", flag.ContinueOnError)
	fs.SetOutput(errOut)
	seed := fs.Int64("seed", 1, "seed of the schedule (as qpc-lab run -seed)")
	users := fs.Int("users", 0, "population size (default: the scenario's)")
	duration := fs.Duration("duration", 0, "simulated length of the schedule (default: the scenario's)")
	speed := fs.Float64("speed", 0, "model a live run at this speed (default: the scenario's own timing, nothing compressed)")
	lag := fs.Duration("lag", 0, "with -speed: the machine's time from a text to its receipt on top of the scenario's delay, real time")
	var file string
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		file, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if file == "" || fs.NArg() > 0 || *seed < 0 || *users < 0 || *duration < 0 || *speed < 0 || *lag < 0 {
		return errors.New("usage: qpc-lab predict <scenario.toml> [-seed N] [-users N] [-duration D] [-speed X -lag D]")
	}
	sc, err := scenario.Load(file)
	if err != nil {
		return err
	}
	if *users > 0 {
		sc.Users = *users
	}
	if *duration > 0 {
		sc.Duration.Duration = *duration
	}
	start := time.Now()
	sda, ep, err := report.Predict(sc, uint64(*seed), *speed, *lag)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s seed=%d users=%d duration=%s speed=%g lag=%s (%.1fs)\n", sc.Name, *seed, sc.Users, sc.Duration.Duration, max(*speed, 1), *lag, time.Since(start).Seconds())
	for _, s := range []score.Summary{sda, ep} {
		fmt.Fprintf(out, "  %-9s linked %d/%d median %v of %v texts received\n", s.Attack, s.Linked, s.Targets, s.Median, s.Messages)
	}
	return nil
}
