// Command qpc-lab is the traffic-analysis laboratory (see lab/ and
// docs/research.md): it runs a population of real clients against a real
// server, records what the server and a network observer see, runs the
// known attacks on those records and reports how many messages an
// attacker needs.
//
//	qpc-lab run <scenario.toml> -out DIR [-seed N] [-users N] [-speed X]
//
// Each subcommand lives in a file of its own and registers itself in
// the subcommands table below.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// subcommand runs one verb of qpc-lab with the arguments after it.
type subcommand struct {
	summary string
	run     func(ctx context.Context, args []string, out, errOut io.Writer) error
}

// subcommands maps each verb to its implementation; one line per file
// that defines it, so that parallel additions merge cleanly.
var subcommands = map[string]subcommand{
	"run": {summary: "run a scenario on a live server with simulated users", run: runRun},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "qpc-lab:", err)
		os.Exit(1)
	}
}

// dispatch runs the subcommand named by args[0].
func dispatch(ctx context.Context, args []string, out, errOut io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(errOut)
		if len(args) == 0 {
			return fmt.Errorf("missing subcommand")
		}
		return nil
	}
	sc, ok := subcommands[args[0]]
	if !ok {
		usage(errOut)
		return fmt.Errorf("unknown subcommand %q", args[0])
	}
	return sc.run(ctx, args[1:], out, errOut)
}

func usage(w io.Writer) {
	names := make([]string, 0, len(subcommands))
	for n := range subcommands {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("usage: qpc-lab <subcommand> [flags]\n\nsubcommands:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  %-8s %s\n", n, subcommands[n].summary)
	}
	fmt.Fprint(w, b.String())
}
