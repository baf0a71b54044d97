// Command qpc-bench measures the delivery server's send throughput and
// send-to-delivery latency against an in-memory baseline over the same
// QUIC transport, and prints one JSON line (see internal/bench).
//
// With no arguments it starts its own server in-process on 127.0.0.1 with
// a bbolt store in a temporary directory and runs the default scenario:
// 2 KiB Send records, 64 senders, one subscribed receiver, 10 s, after a
// baseline phase with the same load.
//
//	qpc-bench [--server qpc://<pin>@host:port] [--record-size 2048]
//	          [--senders 64] [--senders-per-conn 8] [--duration 10s]
//	          [--drain 5s] [--baseline=true] [--scenario name]
//	          [--cpuprofile qpc.pprof] [--baseline-cpuprofile relay.pprof]
//
// qpc-bench report runs the whole benchmark set, each figure against a
// baseline measured in the same run, and writes docs/benchmarks.md and
// its PNG plots under docs/bench/ (see internal/bench/report):
//
//	qpc-bench report [--out docs] [--ds-duration 10s] [--ds-senders 64]
//	                 [--kt-labels 1000000] [--mls-sizes 2,8,32,128]
//	                 [--benchtime 500ms] [--rounds 3]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/quicprochat/qpc/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	if len(os.Args) > 1 && os.Args[1] == "report" {
		err = runReport(ctx, os.Args[2:], os.Stdout, os.Stderr)
	} else {
		err = run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	}
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "qpc-bench:", err)
		os.Exit(1)
	}
}

// run parses args, runs the scenario and writes the result line to out.
func run(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs := flag.NewFlagSet("qpc-bench", flag.ContinueOnError)
	fs.SetOutput(errOut)
	var cfg bench.Config
	verbose := fs.Bool("v", false, "log server and client debug messages to stderr")
	fs.StringVar(&cfg.Server, "server", "", "qpc:// address of an existing server (default: start one in-process on 127.0.0.1)")
	fs.IntVar(&cfg.RecordSize, "record-size", bench.DefaultRecordSize, "padding bucket each Send record fills exactly, in bytes")
	fs.IntVar(&cfg.Senders, "senders", bench.DefaultSenders, "concurrent senders")
	fs.IntVar(&cfg.SendersPerConn, "senders-per-conn", bench.DefaultSendersPerConn, "senders sharing one QUIC connection")
	fs.DurationVar(&cfg.Duration, "duration", bench.DefaultDuration, "send window of each phase")
	fs.DurationVar(&cfg.Drain, "drain", bench.DefaultDrain, "longest wait for acknowledged messages after the senders stop")
	fs.BoolVar(&cfg.Baseline, "baseline", true, "also run the in-memory relay baseline and report the ratio")
	fs.BoolVar(&cfg.Tokens, "tokens", false, "also run the load against a server that requires a delivery token per create and send, and report the ratio to the tokens-off run")
	fs.BoolVar(&cfg.TokenPerSend, "token-per-send", false, "with --tokens: pay every Send with a token of its own, as before one token paid for several Sends on its connection")
	fs.StringVar(&cfg.Scenario, "scenario", bench.DefaultScenario, "scenario name reported in the result")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a CPU profile of the qpc phase's send window to this file")
	fs.StringVar(&cfg.TokensCPUProfile, "tokens-cpuprofile", "", "write a CPU profile of the tokens phase's send window to this file")
	fs.StringVar(&cfg.BaselineCPUProfile, "baseline-cpuprofile", "", "write a CPU profile of the baseline's send window to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	// bench.Config reads zero as "default"; on the command line a zero is
	// a mistake worth reporting, not a request for 64 senders.
	if cfg.Senders < 1 || cfg.SendersPerConn < 1 || cfg.RecordSize < 1 || cfg.Duration <= 0 || cfg.Drain < 0 {
		return errors.New("--senders, --senders-per-conn, --record-size and --duration must be positive, --drain not negative")
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: level}))
	res, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	line, err := json.Marshal(res)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "%s\n", line)
	return err
}
