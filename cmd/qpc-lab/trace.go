package main

import (
	"bufio"
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
)

func init() {
	subcommands["trace"] = subcommand{summary: "write the observer record a server would write, from the trace model (no server)", run: runTrace}
}

func runTrace(_ context.Context, args []string, out, errOut io.Writer) error {
	fs := flag.NewFlagSet("trace", flag.ContinueOnError)
	fs.SetOutput(errOut)
	path := fs.String("out", "", "observer record to write (JSONL)")
	idPath := fs.String("identities", "", "also write the attacker's public knowledge (handle -> intro mailbox, JSON)")
	defence := fs.String("defence", "naive", "defence case (lab/report.Defences)")
	seed := fs.Uint64("seed", 1, "seed")
	users := fs.Int("users", 10000, "users")
	hot := fs.Int("hot", 20, "target pairs")
	interval := fs.Duration("interval", 300*time.Second, "mean time between a target pair's texts, each way")
	duration := fs.Duration("duration", time.Hour, "modelled time")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" {
		return fmt.Errorf("trace: -out is required")
	}
	var names []string
	cases, err := report.Defences(*users, *hot, int64(*interval), int64(*duration), *seed)
	if err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	for _, c := range cases {
		names = append(names, c.Defence)
		if c.Defence != *defence {
			continue
		}
		f, err := os.Create(*path)
		if err != nil {
			return fmt.Errorf("trace: %w", err)
		}
		w := bufio.NewWriterSize(f, 1<<20)
		fmt.Fprintf(w, `{"v":1,"schema":"qpc-observer","start":%q}`+"\n", time.Unix(0, 0).UTC().Format(time.RFC3339Nano))
		enc := json.NewEncoder(w)
		tr, err := traceGenerate(c, func(e *attack.Event) error { return enc.Encode(e) })
		if err == nil {
			err = w.Flush()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("trace: %w", err)
		}
		if *idPath != "" {
			b, _ := json.Marshal(tr.Identities())
			if err := os.WriteFile(*idPath, b, 0o644); err != nil {
				return fmt.Errorf("trace: %w", err)
			}
		}
		fmt.Fprintf(out, "%s: %d texts delivered\n", *path, tr.Texts)
		return nil
	}
	return fmt.Errorf("trace: unknown defence %q (have %s)", *defence, strings.Join(names, ", "))
}
