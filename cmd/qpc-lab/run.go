package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/quicprochat/qpc/lab/population"
	"github.com/quicprochat/qpc/lab/scenario"
)

// runRun is `qpc-lab run <scenario> -out DIR [-seed N] [-users N]
// [-speed X] [-duration D]`: a live run of the scenario (lab/population).
func runRun(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs := flag.NewFlagSet("qpc-lab run", flag.ContinueOnError)
	fs.SetOutput(errOut)
	dir := fs.String("out", "", "directory for observer.jsonl, truth.jsonl and run.json (required)")
	seed := fs.Int64("seed", 1, "seed of the schedule")
	users := fs.Int("users", 0, "population size (default: the scenario's)")
	speed := fs.Float64("speed", 0, "how much faster than real time to run (default: the scenario's)")
	duration := fs.Duration("duration", 0, "simulated length of the schedule (default: the scenario's)")
	network := fs.Bool("network", true, "relay the clients through the lab's UDP relay and write network.jsonl")
	verbose := fs.Bool("v", false, "log progress to stderr")
	fs.Usage = func() {
		fmt.Fprintln(errOut, "usage: qpc-lab run <scenario.toml> -out DIR [-seed N] [-users N] [-speed X] [-duration D] [-network=false] [-v]")
		fs.PrintDefaults()
	}
	// The scenario may come before or after the flags.
	var file string
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		file, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if file == "" && fs.NArg() > 0 {
		file = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return err
		}
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("run: unexpected arguments %q", fs.Args())
	}
	if file == "" || *dir == "" {
		fs.Usage()
		return errors.New("run: a scenario file and -out are required")
	}
	if *users < 0 || *speed < 0 || *duration < 0 {
		return errors.New("run: -users, -speed and -duration must not be negative")
	}
	sc, err := scenario.Load(file)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if *verbose {
		log = slog.New(slog.NewTextHandler(errOut, nil))
	}
	m, err := population.Run(ctx, population.Options{Scenario: sc, Seed: *seed, Out: *dir, Users: *users, Speed: *speed, Duration: *duration, Network: *network, Logger: log})
	if m != nil {
		fmt.Fprintf(out, "qpc-lab run: %s seed=%d users=%d speed=%g texts=%d/%d lost=%d receipts=%d cover=%d setup=%.1fs run=%.1fs out=%s\n",
			m.Scenario, m.Seed, m.Users, m.Speed, m.Texts, m.Scheduled, m.Lost, m.Receipts, m.Cover, m.SetupSeconds, m.RunSeconds, *dir)
	}
	return err
}
