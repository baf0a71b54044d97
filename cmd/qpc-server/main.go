// Command qpc-server runs the quicprochat delivery service.
//
//	qpc-server init    [flags]   create the data directory, config file and server key
//	qpc-server run     [flags]   serve (the default when no command is given)
//	qpc-server invite  [flags]   print the invite clients join with (--qr: as a QR code too)
//	qpc-server address [flags]   print the server's qpc:// address (--qr: as a QR code too)
//	qpc-server config  [flags]   print the effective configuration and where each value came from
//	qpc-server witness ...       run a C2SP tlog-witness (kt/witness)
//	qpc-server version
//	qpc-server help
//
// Every command takes one flag per configuration key (--listen,
// --data-dir, --message-ttl, ...); see `qpc-server help`. Values come from
// flags, then QPC_* environment variables, then <data dir>/qpc-server.toml,
// then the built-in defaults.
//
// This is a thin main: flags, subcommands and signals. Configuration lives
// in config.Config; server.Run opens and serves everything.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/quicprochat/qpc/internal/qrcode"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/config"
	"github.com/quicprochat/qpc/wire"
)

// version is set at link time (-ldflags "-X main.version=v1.2.3"); builds
// without it report the module version from the build info.
var version string

func main() {
	c := &cli{stdout: os.Stdout, stderr: os.Stderr, lookupEnv: os.LookupEnv, notify: notifySignals}
	os.Exit(c.main(os.Args[1:]))
}

// notifySignals starts catching SIGINT and SIGTERM. Only run does so: the
// other commands finish on their own and should die on ^C as usual.
func notifySignals() <-chan os.Signal {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	return sigs
}

// cli carries what a command may touch, so tests can run commands
// in-process with their own output, environment and signals.
type cli struct {
	stdout, stderr io.Writer
	lookupEnv      func(string) (string, bool)
	notify         func() <-chan os.Signal
}

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the command failed
	exitUsage = 2 // the command line was wrong
)

const usageText = `qpc-server: the quicprochat delivery server

Usage:
  qpc-server [run] [flags]     serve; initialises the data directory on first use
  qpc-server init [flags]      create the data directory, qpc-server.toml and the server key
  qpc-server invite [flags]    print the invite: the one string a client needs
                               (qpc init <invite>): server key, endpoints, key-transparency
                               pin, padding buckets, witness policy; --host <name> the host
                               clients reach the server by; --other-nodes h:p,... the
                               endpoints of the server's other nodes; --qr as a QR code too
  qpc-server address [flags]   print the qpc:// address clients use (pinned server key);
                               --other-nodes h:p,... adds the endpoints of the server's
                               other nodes; --qr prints each address as a QR code too
  qpc-server config [flags]    print the effective configuration, annotated with its sources
  qpc-server kt-vkey [flags]   print the key-transparency note verifier key, VRF key and config hash
  qpc-server onion ...         manage the clients authorized to reach the onion service
                               (add-client, remove-client, list-clients; see qpc-server onion help)
  qpc-server witness ...       run a C2SP tlog-witness for key-transparency logs
                               (run, vkey; see qpc-server witness help)
  qpc-server version           print the version
  qpc-server help              print this help

Configuration, highest precedence first: flags, QPC_* environment variables
(QPC_ + the upper-cased key: QPC_LISTEN, QPC_DATA_DIR, QPC_MESSAGE_TTL, ...),
<data dir>/qpc-server.toml, built-in defaults. The data directory itself
comes from --data-dir, QPC_DATA_DIR or the default ./qpc-data.

Flags (every command but version and help):
`

func (c *cli) main(args []string) int {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "help":
		c.usage(c.stdout)
		return exitOK
	case "version":
		fmt.Fprintf(c.stdout, "qpc-server %s (protocol %s, %s)\n", buildVersion(), wire.ALPN, goVersion())
		return exitOK
	case "onion":
		return c.onion(args)
	case "witness":
		return c.witness(args)
	case "init", "run", "address", "config", "kt-vkey", "invite":
	default:
		fmt.Fprintf(c.stderr, "qpc-server: unknown command %q\n\n", cmd)
		c.usage(c.stderr)
		return exitUsage
	}

	fs := flag.NewFlagSet("qpc-server "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported below, once
	flags := config.Flags{}
	flags.Register(fs)
	var qr bool
	var host, others string
	switch cmd {
	case "address":
		fs.BoolVar(&qr, "qr", false, "address only: print each address as a QR code too, under its text")
		fs.StringVar(&others, "other-nodes", "", "address only: the endpoints of the server's other nodes, host:port, comma-separated, listed after this one's (docs/scaling.md)")
	case "invite":
		fs.BoolVar(&qr, "qr", false, "invite only: print the invite as a QR code too, under its text")
		fs.StringVar(&host, "host", "", "invite only: the host name or address clients reach the server by (default: the listen host)")
		fs.StringVar(&others, "other-nodes", "", "invite only: the endpoints of the server's other nodes, host:port or <56 characters>.onion:port, comma-separated (docs/scaling.md)")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.usage(c.stdout)
			return exitOK
		}
		fmt.Fprintf(c.stderr, "qpc-server %s: %v\n(run qpc-server help for the flags)\n", cmd, err)
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(c.stderr, "qpc-server %s: unexpected argument %q\n", cmd, fs.Arg(0))
		return exitUsage
	}
	cfg, err := config.Load(flags, c.lookupEnv)
	if err != nil {
		fmt.Fprintf(c.stderr, "qpc-server %s: %v\n", cmd, err)
		return exitError
	}

	switch cmd {
	case "kt-vkey":
		return c.ktVKey(cfg)
	case "init":
		err = c.init(cfg)
	case "address":
		err = c.address(cfg, others, qr)
	case "invite":
		err = c.invite(cfg, host, others, qr)
	case "config":
		err = cfg.Render(c.stdout)
	case "run":
		err = c.run(cfg)
	}
	if err != nil {
		fmt.Fprintf(c.stderr, "qpc-server %s: %v\n", cmd, err)
		return exitError
	}
	return exitOK
}

func (c *cli) usage(w io.Writer) {
	fmt.Fprint(w, usageText)
	fs := flag.NewFlagSet("qpc-server", flag.ContinueOnError)
	config.Flags{}.Register(fs)
	fs.SetOutput(w)
	fs.PrintDefaults()
}

func buildVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return "devel-" + s.Value[:12]
		}
	}
	return "devel"
}

func goVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return bi.GoVersion
	}
	return "unknown Go version"
}

func (c *cli) init(cfg *config.Config) error {
	note := func(format string, args ...any) { fmt.Fprintf(c.stderr, format+"\n", args...) }
	id, err := server.InitDataDir(cfg, note)
	if err != nil {
		return err
	}
	c.printAddress(id.Address(cfg.Listen), "address: ")
	return nil
}

// address prints the server's addresses, one a line; with qr, each line is
// followed by the address as a QR code (for a phone's camera).
func (c *cli) address(cfg *config.Config, others string, qr bool) error {
	id, err := server.LoadIdentity(cfg.DataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no server key in %s (run qpc-server init first)", cfg.DataDir)
	}
	if err != nil {
		return err
	}
	if !cfg.OnionOnly {
		addr := id.Address(cfg.Listen)
		if others != "" {
			// The server's other nodes after this one: parsed as a
			// client will, so a list it would refuse is not printed.
			a, err := wire.ParseAddress(addr.String() + "," + others)
			if err != nil {
				return fmt.Errorf("--other-nodes: %w", err)
			}
			addr = a
		}
		c.printAddress(addr, "")
		if qr {
			if err := qrcode.Render(c.stdout, addr.String()); err != nil {
				return err
			}
		}
	}
	onion, err := c.onionAddress(cfg, id)
	if err != nil || onion == "" || !qr {
		return err
	}
	return qrcode.Render(c.stdout, onion)
}

// printAddress writes prefix + the qpc:// address on stdout, and warns on
// stderr when clients could not dial it as written.
func (c *cli) printAddress(addr wire.Address, prefix string) {
	fmt.Fprintf(c.stdout, "%s%s\n", prefix, addr)
	host, port, err := net.SplitHostPort(addr.Host)
	if err != nil {
		return
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		fmt.Fprintf(c.stderr, "note: %s listens on every interface; give clients the address with this server's public host name in place of %s\n", addr.Host, host)
	}
	if port == "0" {
		fmt.Fprintf(c.stderr, "note: listen port 0 is chosen when the server starts; qpc-server run prints the address with the real port\n")
	}
}

// errForced marks a shutdown cut short by a second signal.
var errForced = errors.New("second signal: exiting without waiting for the shutdown to finish")

// run serves until a signal, then drains (server.Run); a second signal
// ends the wait for the drain. It initialises the data directory on first
// use, so that a bare `qpc-server` just works.
func (c *cli) run(cfg *config.Config) error {
	// Catch signals first: one that arrives while the store opens is
	// acted on as soon as the server is up.
	signals := c.notify()
	log := cfg.NewLogger(c.stderr)
	pass, _ := c.lookupEnv("QPC_TOR_CONTROL_PASSWORD")
	bar := newProgressBar(c.stderr)
	defer bar.done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- server.Run(ctx, cfg, server.RunOptions{
			Logger: log, Version: buildVersion(), TorProgress: bar.report, TorControlPassword: pass,
			Listening: func(l server.Listener) {
				switch l.Kind {
				case server.ListenerQUIC:
					c.printAddress(l.Address, "address: ")
				case server.ListenerOnion:
					fmt.Fprintf(c.stdout, "onion address: %s\n", l.Address)
				}
			},
		})
	}()
	select {
	case err := <-done:
		return err
	case sig := <-signals:
		log.Info("shutting down", "signal", sig.String(), "timeout", cfg.ShutdownTimeout.String())
		cancel()
	}
	// A forced exit leaves at once, as asked: every acknowledged send is
	// already committed, and bbolt needs no clean close to stay
	// consistent.
	return drain(signals, func() error { return <-done })
}

// drain runs stop and waits for it, unless another signal arrives first:
// then it returns errForced at once, for an operator who does not want to
// wait out the shutdown timeout.
func drain(signals <-chan os.Signal, stop func() error) error {
	done := make(chan error, 1)
	go func() { done <- stop() }()
	select {
	case err := <-done:
		return err
	case <-signals:
		return errForced
	}
}
