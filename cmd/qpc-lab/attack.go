package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/quicprochat/qpc/lab/attack"
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
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rec == "" {
		return fmt.Errorf("attack: -record is required")
	}
	opt := attack.Options{Identities: map[string]string{}, Attacks: strings.Split(*attacks, ","), Window: int64(*window)}
	if *idPath != "" {
		b, err := os.ReadFile(*idPath)
		if err != nil {
			return fmt.Errorf("attack: %w", err)
		}
		if err := json.Unmarshal(b, &opt.Identities); err != nil {
			return fmt.Errorf("attack: %s: %w", *idPath, err)
		}
	}
	if *targets != "" {
		opt.Targets = strings.Split(*targets, ",")
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
	if err := attack.ReadObserver(f, func(e *attack.Event) error { r.Observe(e); return nil }); err != nil {
		return err
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", " ")
	return enc.Encode(r.Results())
}
