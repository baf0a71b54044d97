package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"

	"github.com/quicprochat/qpc/internal/bench/report"
)

// runReport parses the report subcommand's flags and writes the report.
func runReport(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs := flag.NewFlagSet("qpc-bench report", flag.ContinueOnError)
	fs.SetOutput(errOut)
	var cfg report.Config
	fs.StringVar(&cfg.OutDir, "out", "docs", "directory of benchmarks.md; the plots go to its bench/ subdirectory")
	fs.DurationVar(&cfg.DSDuration, "ds-duration", report.DefaultDSDuration, "send window of each DS throughput phase")
	fs.IntVar(&cfg.DSSenders, "ds-senders", report.DefaultDSSenders, "concurrent senders of the DS throughput run")
	fs.IntVar(&cfg.KTLabels, "kt-labels", report.DefaultKTLabels, "labels in the key-transparency directory the proofs are measured on")
	sizes := fs.String("mls-sizes", joinInts(report.DefaultMLSSizes), "comma-separated MLS group sizes")
	fs.StringVar(&cfg.BenchTime, "benchtime", report.DefaultBenchTime, "testing benchtime of each micro-benchmark per round (a duration, or Nx)")
	fs.IntVar(&cfg.Rounds, "rounds", report.DefaultRounds, "rounds of each micro-benchmark and its baseline, run in turn; the fastest round of each is kept")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("report: unexpected arguments %q", fs.Args())
	}
	if cfg.DSDuration <= 0 || cfg.DSSenders < 1 || cfg.KTLabels < 1 || cfg.Rounds < 1 {
		return errors.New("report: --ds-duration, --ds-senders, --kt-labels and --rounds must be positive")
	}
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 2 {
			return fmt.Errorf("report: --mls-sizes %q: each size must be an integer of at least 2", *sizes)
		}
		cfg.MLSSizes = append(cfg.MLSSizes, n)
	}
	cfg.Command = commandLine(args)
	cfg.Progress = errOut
	cfg.Logger = slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: slog.LevelError}))
	r, err := report.Generate(ctx, cfg)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "wrote %s/%s and %s/%s/*.png in %v\n", cfg.OutDir, report.Markdown, cfg.OutDir, report.DefaultPlotDir, r.Took.Round(1e9))
	return err
}

// commandLine is the command as the report records it.
func commandLine(args []string) string {
	parts := []string{"qpc-bench", "report"}
	for _, a := range args {
		if strings.ContainsAny(a, " \t'\"") {
			a = strconv.Quote(a)
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}
