package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/quicprochat/qpc/kt/audit"
	"github.com/quicprochat/qpc/kt/witness"
	"github.com/quicprochat/qpc/tor"
)

const witnessUsage = `Usage:
  qpc-server witness [run] --log VKEY [--log VKEY ...] [flags]
      run a C2SP tlog-witness: POST /add-checkpoint cosigns checkpoints of
      the logs given, each only if consistent with what it cosigned before
  qpc-server witness vkey [flags]
      print the witness's cosigner keys (Ed25519 cosignature/v1, then
      ML-DSA-44): what log operators put in their witness policy

A log is given by its note verifier key, the first line of
qpc-server kt-vkey on the log's server; its origin is the key's name.
The key (witness.key) and the state (witness.db) are created in the data
directory on first start. With --audit ORIGIN=URL the witness also audits
that qpc log (reading its public tiles and update lists at URL) and
cosigns only checkpoints whose every epoch's prefix tree follows from the
previous one; the auditor's state is audit-<hash>.db beside witness.db.

Flags:
`

// witnessFlags are the flags of `qpc-server witness`.
type witnessFlags struct {
	dataDir, listen, name string
	logs                  stringList
	audits                stringList
	onion                 bool
	onionPort             int
	torBinary, torControl string
	torConfig             string
}

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

func (f *witnessFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.dataDir, "data-dir", "qpc-witness", "the witness's data directory (key and state)")
	fs.StringVar(&f.listen, "listen", "127.0.0.1:7380", "HTTP address to serve add-checkpoint on")
	fs.StringVar(&f.name, "name", "", "cosigner name, a schema-less URL such as witness.example.org/w1 (first start only; default qpc-witness-<key>)")
	fs.Var(&f.logs, "log", "a log to witness: its note verifier key (repeat for several logs)")
	fs.Var(&f.audits, "audit", "ORIGIN=URL: audit the qpc key-transparency log ORIGIN (one of --log) read at URL (its kt_listen and prefix, e.g. http://log.example:4480/kt) and cosign only checkpoints whose every epoch passes (repeat for several logs)")
	fs.BoolVar(&f.onion, "onion", false, "also serve as a Tor onion service (key in <data dir>/onion.key)")
	fs.IntVar(&f.onionPort, "onion-port", 80, "the onion service's virtual port")
	fs.StringVar(&f.torBinary, "tor-binary", "tor", "the tor binary started for --onion")
	fs.StringVar(&f.torConfig, "tor-config", "", "a file of extra torrc lines for the tor started for --onion (bridges, a private network)")
	fs.StringVar(&f.torControl, "tor-control", "", "attach to a running tor at this control address instead of starting one (password from QPC_TOR_CONTROL_PASSWORD)")
}

func (c *cli) witness(args []string) int {
	sub := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("qpc-server witness", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var f witnessFlags
	f.register(fs)
	if sub == "help" {
		c.witnessUsage(c.stdout, fs)
		return exitOK
	}
	if sub != "run" && sub != "vkey" {
		fmt.Fprintf(c.stderr, "qpc-server witness: unknown command %q\n\n", sub)
		c.witnessUsage(c.stderr, fs)
		return exitUsage
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.witnessUsage(c.stdout, fs)
			return exitOK
		}
		fmt.Fprintf(c.stderr, "qpc-server witness %s: %v\n(run qpc-server witness help for the flags)\n", sub, err)
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(c.stderr, "qpc-server witness %s: unexpected argument %q\n", sub, fs.Arg(0))
		return exitUsage
	}
	var err error
	switch sub {
	case "vkey":
		err = c.witnessVKey(&f)
	case "run":
		if len(f.logs) == 0 {
			fmt.Fprintf(c.stderr, "qpc-server witness: give at least one --log VKEY (the first line of qpc-server kt-vkey)\n")
			return exitUsage
		}
		err = c.witnessRun(&f)
	}
	if err != nil {
		fmt.Fprintf(c.stderr, "qpc-server witness %s: %v\n", sub, err)
		return exitError
	}
	return exitOK
}

func (c *cli) witnessUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, witnessUsage)
	fs.SetOutput(w)
	fs.PrintDefaults()
}

func (c *cli) witnessVKey(f *witnessFlags) error {
	ed, ml, err := witness.VerifierKeys(f.dataDir, f.name)
	if err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, ed)
	fmt.Fprintln(c.stdout, ml)
	return nil
}

// witnessRun serves add-checkpoint until a signal.
func (c *cli) witnessRun(f *witnessFlags) error {
	signals := c.notify()
	log := slog.New(slog.NewTextHandler(c.stderr, nil))
	var logs []witness.Log
	for _, vk := range f.logs {
		l, err := witness.LogFromVKey(vk)
		if err != nil {
			return err
		}
		logs = append(logs, l)
	}
	closeAudits, err := witnessAudits(f, logs)
	if err != nil {
		return err
	}
	defer closeAudits()
	w, err := witness.Open(witness.Options{Dir: f.dataDir, Name: f.name, Logs: logs, Logger: log})
	if err != nil {
		return err
	}
	defer w.Close()
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{
		Handler:           w,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	origins := make([]string, len(logs))
	for i, l := range logs {
		origins[i] = l.Origin
	}
	log.Info("witness serving", "addr", ln.Addr().String(), "name", w.Name(), "logs", strings.Join(origins, ","), "vkey", w.VerifierKey())

	if f.onion {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		svc, stop, err := c.witnessOnion(ctx, f, ln.Addr().String(), log)
		cancel()
		if err != nil {
			srv.Close()
			return err
		}
		defer stop()
		log.Info("witness onion service published", "addr", svc)
		fmt.Fprintf(c.stdout, "http://%s/add-checkpoint\n", svc)
	}

	select {
	case err := <-served:
		return err
	case s := <-signals:
		log.Info("stopping", "signal", s.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		srv.Close()
	}
	return nil
}

// witnessAudits opens an auditor (kt/audit, docs/key-transparency.md §8)
// for each --audit ORIGIN=URL, in <data dir>/audit-<16 hex digits of
// SHA-256(origin)>.db, and sets it as the Check of that origin's log: the
// witness then cosigns a checkpoint of the log only if every epoch up to
// it follows from the previous one.
func witnessAudits(f *witnessFlags, logs []witness.Log) (func(), error) {
	var auditors []*audit.Auditor
	closeAll := func() {
		for _, a := range auditors {
			a.Close()
		}
	}
	seen := map[string]bool{}
	for _, spec := range f.audits {
		origin, base, ok := strings.Cut(spec, "=")
		if !ok || origin == "" || !strings.HasPrefix(base, "http") {
			closeAll()
			return nil, fmt.Errorf("--audit %q: want ORIGIN=URL (the log's kt_listen and prefix, e.g. http://log.example:4480/kt)", spec)
		}
		i := slices.IndexFunc(logs, func(l witness.Log) bool { return l.Origin == origin })
		if i < 0 || seen[origin] {
			closeAll()
			return nil, fmt.Errorf("--audit %q: the origin must be one --log's, once", spec)
		}
		seen[origin] = true
		if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
			closeAll()
			return nil, err
		}
		sum := sha256.Sum256([]byte(origin))
		a, err := audit.Open(filepath.Join(f.dataDir, fmt.Sprintf("audit-%x.db", sum[:8])), audit.Options{
			Log:      audit.HTTPLog(base, &http.Client{Timeout: time.Minute}),
			Verifier: logs[i].Verifier,
		})
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("--audit %s: %w", origin, err)
		}
		auditors = append(auditors, a)
		logs[i].Check = func(ctx context.Context, _, n witness.Tree, cp []byte) error {
			return a.CheckTree(ctx, n.Size, n.Root, cp)
		}
	}
	return closeAll, nil
}

// witnessOnion publishes the witness as an onion service forwarding to
// target, with its own onion key in the data directory.
func (c *cli) witnessOnion(ctx context.Context, f *witnessFlags, target string, log *slog.Logger) (string, func(), error) {
	key, err := tor.LoadOrCreateOnionKey(filepath.Join(f.dataDir, "onion.key"))
	if err != nil {
		return "", nil, err
	}
	var t *tor.Tor
	if f.torControl != "" {
		pass, _ := c.lookupEnv("QPC_TOR_CONTROL_PASSWORD")
		log.Info("attaching to tor", "control", f.torControl)
		t, err = tor.Attach(ctx, f.torControl, pass, nil)
	} else {
		torrc := ""
		if f.torConfig != "" {
			b, err := os.ReadFile(f.torConfig)
			if err != nil {
				return "", nil, fmt.Errorf("tor-config: %w", err)
			}
			torrc = string(b)
		}
		log.Info("starting tor", "binary", f.torBinary)
		t, err = tor.Start(ctx, tor.Config{DataDir: filepath.Join(f.dataDir, "tor"), ExePath: f.torBinary, Torrc: torrc})
	}
	if err != nil {
		return "", nil, err
	}
	svc, err := t.Publish(ctx, tor.OnionConfig{Key: key, VirtualPort: f.onionPort, Target: target})
	if err != nil {
		t.Close()
		return "", nil, err
	}
	return svc.Addr(), func() { svc.Close(); t.Close() }, nil
}
