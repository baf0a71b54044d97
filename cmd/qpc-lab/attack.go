package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/quicprochat/qpc/lab/attack"
	"github.com/quicprochat/qpc/lab/attack/score"
	"github.com/quicprochat/qpc/lab/record"
	"github.com/quicprochat/qpc/lab/report"
	"github.com/quicprochat/qpc/lab/trace"
)

func init() {
	subcommands["attack"] = subcommand{summary: "run the attacks on an observer record and print their guesses (JSON)", run: runAttack}
}

func traceGenerate(c report.Case, emit func(*attack.Event) error) (*trace.Truth, error) {
	return trace.Generate(c.Params, emit)
}

func runAttack(_ context.Context, args []string, out, errOut io.Writer) error {
	fs := flag.NewFlagSet("attack", flag.ContinueOnError)
	fs.SetOutput(errOut)
	rec := fs.String("record", "", "observer record (JSONL)")
	idPath := fs.String("identities", "", "handle -> intro mailbox (JSON), the attacker's public knowledge")
	targets := fs.String("targets", "", "target handles, comma-separated")
	mboxes := fs.String("target-mailboxes", "", "target mailboxes, comma-separated")
	attacks := fs.String("attacks", strings.Join(attack.Names, ","), "attacks to run")
	window := fs.Duration("window", time.Second, "SDA receipt window")
	epoch := fs.Duration("epoch", time.Second, "sda-epoch's fixed epoch")
	span := fs.Int("epoch-span", 2, "epochs sda-epoch counts per target epoch, the target's own first")
	seed := fs.Uint64("seed", 1, "seed of sda-epoch's background epochs")
	truthPath := fs.String("truth", "", "score against this ground truth (a live run's truth.jsonl) and print the summaries instead of the guesses")
	from := fs.Int64("from", 0, "skip events before this time (ns; a live run's run_start_ns, to leave out the setup) and count time from it")
	allUsers := fs.Bool("all", false, "target every handle of -identities")
	runPath := fs.String("run", "", "a live run's run.json: -from is its run_start_ns")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rec == "" {
		return fmt.Errorf("attack: -record is required")
	}
	if *runPath != "" {
		b, err := os.ReadFile(*runPath)
		if err != nil {
			return fmt.Errorf("attack: %w", err)
		}
		var m struct {
			RunStartNS int64 `json:"run_start_ns"`
		}
		if err := json.Unmarshal(b, &m); err != nil {
			return fmt.Errorf("attack: %s: %w", *runPath, err)
		}
		*from = m.RunStartNS
	}
	opt := attack.Options{Identities: map[string]string{}, Attacks: strings.Split(*attacks, ","), Window: int64(*window),
		Epoch: int64(*epoch), EpochSpan: *span, Seed: *seed}
	if *idPath != "" {
		b, err := os.ReadFile(*idPath)
		if err != nil {
			return fmt.Errorf("attack: %w", err)
		}
		if err := json.Unmarshal(b, &opt.Identities); err != nil {
			return fmt.Errorf("attack: %s: %w", *idPath, err)
		}
	}
	var lines []record.Truth
	if *truthPath != "" {
		tf, err := os.Open(*truthPath)
		if err != nil {
			return fmt.Errorf("attack: %w", err)
		}
		_, lines, err = record.ReadTruth(tf)
		tf.Close()
		if err != nil {
			return fmt.Errorf("attack: %s: %w", *truthPath, err)
		}
		if *idPath == "" {
			// The handle -> intro mailbox map is public in key
			// transparency: the server computes it; the truth holds it.
			for _, x := range lines {
				if x.User != nil {
					opt.Identities[x.User.Handle] = x.User.IntroMailbox
				}
			}
		}
	}
	if *targets != "" {
		opt.Targets = strings.Split(*targets, ",")
	}
	if *allUsers {
		for h := range opt.Identities {
			opt.Targets = append(opt.Targets, h)
		}
		slices.Sort(opt.Targets)
	}
	if *mboxes != "" {
		opt.TargetMailboxes = strings.Split(*mboxes, ",")
	}
	r, err := attack.New(opt)
	if err != nil {
		return err
	}
	f, err := os.Open(*rec)
	if err != nil {
		return fmt.Errorf("attack: %w", err)
	}
	defer f.Close()
	err = attack.ReadObserver(f, func(e *attack.Event) error {
		if e.T < *from {
			return nil
		}
		e.T -= *from
		r.Observe(e)
		return nil
	})
	if err != nil {
		return err
	}
	if *truthPath != "" {
		tb, err := score.FromRecord(lines, *from)
		if err != nil {
			return err
		}
		for _, res := range r.Results() {
			s := score.Score(res, tb, score.Identity)
			fmt.Fprintf(out, "%-13s linked %d/%d median %v texts to link of %v received; precision %.2f, TPR at 1%% FPR %.2f\n",
				s.Attack, s.Linked, s.Targets, s.Median, s.Messages, s.Precision, s.TPR)
		}
		return nil
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", " ")
	return enc.Encode(r.Results())
}
