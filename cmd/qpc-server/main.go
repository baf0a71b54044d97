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
// This is a thin main: configuration lives in server.Config, the work in
// the server and server/store packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/quicprochat/qpc/internal/qrcode"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/accounts"
	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/wire"
	bolterrors "go.etcd.io/bbolt/errors"
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
                               clients reach the server by; --qr as a QR code too
  qpc-server address [flags]   print the qpc:// address clients use (pinned server key);
                               --qr prints each address as a QR code too, under its text
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
	flags := server.ConfigFlags{}
	flags.Register(fs)
	var qr bool
	var host string
	switch cmd {
	case "address":
		fs.BoolVar(&qr, "qr", false, "address only: print each address as a QR code too, under its text")
	case "invite":
		fs.BoolVar(&qr, "qr", false, "invite only: print the invite as a QR code too, under its text")
		fs.StringVar(&host, "host", "", "invite only: the host name or address clients reach the server by (default: the listen host)")
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
	cfg, err := server.LoadConfig(flags, c.lookupEnv)
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
		err = c.address(cfg, qr)
	case "invite":
		err = c.invite(cfg, host, qr)
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
	server.ConfigFlags{}.Register(fs)
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

// errKeyExists explains why init stops; the pin is what every client has
// stored, so the message says what to do instead.
var errKeyExists = errors.New("refusing to replace the existing server key: every client pins it, a new key would lock them all out (qpc-server address prints the current address)")

func (c *cli) init(cfg *server.Config) error {
	note := func(format string, args ...any) { fmt.Fprintf(c.stderr, format+"\n", args...) }
	id, err := initDataDir(cfg, note)
	if err != nil {
		return err
	}
	c.printAddress(cfg, id, cfg.Listen, "address: ")
	return nil
}

// initDataDir creates the data directory (0700), the server key and, if
// there is none, a commented default qpc-server.toml (0600). The key comes
// first so that a refused init changes nothing. note reports each step.
func initDataDir(cfg *server.Config, note func(format string, args ...any)) (*server.Identity, error) {
	dir := cfg.DataDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&0o077 != 0 {
		// Not changed behind the operator's back, but said out loud: the
		// directory holds the server key and every queued envelope.
		note("warning: data directory %s has mode %04o; other users may read it (chmod 700 %s)",
			dir, fi.Mode().Perm(), dir)
	}
	id, err := server.CreateIdentity(dir)
	if errors.Is(err, server.ErrKeyExists) {
		return nil, fmt.Errorf("%s: %w", keyPath(cfg), errKeyExists)
	}
	if err != nil {
		return nil, err
	}
	note("created server key %s", keyPath(cfg))
	f, err := os.OpenFile(cfg.FilePath(), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case errors.Is(err, fs.ErrExist):
		note("kept existing %s", cfg.FilePath())
	case err != nil:
		return nil, fmt.Errorf("write config file: %w", err)
	default:
		_, werr := f.Write(server.DefaultConfigFile())
		if err := errors.Join(werr, f.Close()); err != nil {
			return nil, fmt.Errorf("write config file: %w", err)
		}
		note("wrote %s", cfg.FilePath())
	}
	return id, nil
}

func keyPath(cfg *server.Config) string {
	return cfg.DataDir + string(os.PathSeparator) + server.KeyFile
}

// address prints the server's addresses, one a line; with qr, each line is
// followed by the address as a QR code (for a phone's camera).
func (c *cli) address(cfg *server.Config, qr bool) error {
	id, err := server.LoadIdentity(cfg.DataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no server key in %s (run qpc-server init first)", cfg.DataDir)
	}
	if err != nil {
		return err
	}
	if !cfg.OnionOnly {
		c.printAddress(cfg, id, cfg.Listen, "")
		if qr {
			if err := qrcode.Render(c.stdout, id.Address(cfg.Listen).String()); err != nil {
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

// printAddress writes prefix + the qpc:// address for hostport on stdout,
// and warns on stderr when clients could not dial it as written.
func (c *cli) printAddress(cfg *server.Config, id *server.Identity, hostport, prefix string) {
	fmt.Fprintf(c.stdout, "%s%s\n", prefix, id.Address(hostport))
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		fmt.Fprintf(c.stderr, "note: %s listens on every interface; give clients the address with this server's public host name in place of %s\n", hostport, host)
	}
	if port == "0" {
		fmt.Fprintf(c.stderr, "note: listen port 0 is chosen when the server starts; qpc-server run prints the address with the real port\n")
	}
}

// errForced marks a shutdown cut short by a second signal.
var errForced = errors.New("second signal: exiting without waiting for the shutdown to finish")

// run serves until a signal, then drains. It initialises the data
// directory on first use, so that a bare `qpc-server` just works.
func (c *cli) run(cfg *server.Config) error {
	// Catch signals first: one that arrives while the store opens is
	// acted on as soon as the server is up.
	signals := c.notify()
	log := cfg.NewLogger(c.stderr)
	id, err := server.LoadIdentity(cfg.DataDir)
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(cfg.StorePath()); serr == nil {
			// A store without its key is a restore or a mistake, not a
			// first start: a new key would change the pin every client
			// holds, so that takes an explicit init.
			return fmt.Errorf("%s holds a store but no server key: restore %s, or run qpc-server init to create a new key (clients then need the new address)",
				cfg.DataDir, server.KeyFile)
		}
		log.Info("no server key yet: initialising the data directory", "dir", cfg.DataDir)
		id, err = initDataDir(cfg, func(format string, args ...any) { log.Info(fmt.Sprintf(format, args...)) })
	}
	if err != nil {
		return err
	}
	opts, storeOpts, err := cfg.Options()
	if err != nil {
		return err
	}
	storeOpts.Logger = log
	// Metrics exist before the store opens, so its commit hook feeds them
	// from the first transaction.
	opts.Metrics = metrics.New(buildVersion())
	storeOpts.OnCommit = server.CommitObserver(opts.Metrics)
	st, err := store.Open(cfg.StorePath(), storeOpts)
	if errors.Is(err, bolterrors.ErrTimeout) {
		return fmt.Errorf("store %s is locked by another process (is another qpc-server running on this data directory?)", cfg.StorePath())
	}
	if over := (*store.OversizeError)(nil); errors.As(err, &over) {
		// Bucket sizes are whole records: the longest envelope plus the
		// Delivery record around it.
		need := over.Largest + (opts.Policy.Max() - server.MaxDeliverable(opts.Policy))
		return fmt.Errorf("%w; the padding policy (buckets %v) cannot deliver them, and each would block its mailbox: "+
			"keep a largest bucket of at least %d bytes until they are delivered or expire (message_ttl %s after arrival, by %s)",
			err, cfg.Buckets, need, cfg.MessageTTL, over.Newest.Add(cfg.MessageTTL.Duration).Add(time.Minute).UTC().Format(time.DateOnly))
	}
	if err != nil {
		return err
	}
	// Accounts and the token issuer: their keys live in the data dir beside
	// the TLS key; the OPAQUE server identity is the pin clients know.
	pin := id.Pin()
	keys, err := accounts.LoadOrCreateKeys(cfg.DataDir, pin[:])
	if err != nil {
		st.Close()
		return err
	}
	accts, err := accounts.Open(cfg.DataDir, keys, cfg.AccountOptions())
	if err != nil {
		st.Close()
		return err
	}
	defer accts.Close()
	secret, err := server.LoadOrCreateTokenSecret(cfg.DataDir)
	if err != nil {
		st.Close()
		return err
	}
	issuer, err := tokens.NewIssuer(secret, tokens.WithEpochLength(cfg.TokenEpoch.Duration))
	if err != nil {
		st.Close()
		return err
	}
	opts.Accounts, opts.Tokens = accts, issuer
	ktDir, stopKT, ktReady, err := startKT(cfg, log, issuer)
	if err != nil {
		st.Close()
		return err
	}
	defer stopKT()
	opts.KT = ktDir
	server.WatchStore(opts.Metrics, st)
	if cfg.ObserverRecord != server.ObserverOff {
		f, err := openObserverRecord(cfg.ObserverRecord)
		if err != nil {
			st.Close()
			return err
		}
		// Shutdown flushes the record; the file closes after it.
		defer f.Close()
		if opts.Observer, err = server.NewObserver(f); err != nil {
			st.Close()
			return err
		}
	}
	// From here on the store must be closed on every path, so that the
	// writer commits what it queued and the file lock is released.
	err = c.serve(cfg, id, st, opts, log, signals, ktReady)
	if errors.Is(err, errForced) {
		// Leave at once, as asked: every acknowledged send is already
		// committed, and bbolt needs no clean close to stay consistent.
		return err
	}
	if cerr := st.Close(); cerr != nil {
		log.Error("closing the store failed", "err", cerr)
		if err == nil {
			err = cerr
		}
	}
	if err == nil {
		log.Info("stopped")
	}
	return err
}

func (c *cli) serve(cfg *server.Config, id *server.Identity, st store.Store, opts server.Options, log *slog.Logger, signals <-chan os.Signal, ktReady func(context.Context) error) error {
	// An onion-only server opens no clearnet socket at all.
	var pc net.PacketConn
	var err error
	if !cfg.OnionOnly {
		pc, err = net.ListenPacket("udp", cfg.Listen)
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("listen %s: address already in use (is another server running? choose another port with --listen)", cfg.Listen)
		}
		if err != nil {
			return fmt.Errorf("listen: %w", err)
		}
	}
	opts.Identity, opts.Store, opts.Logger = id, st, log
	srv, err := server.New(opts)
	if err != nil {
		if pc != nil {
			pc.Close()
		}
		return err
	}
	if cfg.KT {
		srv.AddReadyCheck("kt", ktReady)
	}
	// Clearnet listeners serve at once; the onion joins when tor is up,
	// which can take minutes on the public network.
	serves := newServing()
	if pc != nil {
		// The address carries the configured host (what the operator
		// chose to expose) and the bound port (which differs when the
		// port was 0).
		host, _, _ := net.SplitHostPort(cfg.Listen)
		port := strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port)
		serves.start(func() error { return srv.Serve(pc) })
		c.printAddress(cfg, id, net.JoinHostPort(host, port), "address: ")
	}
	if cfg.TunnelListen != server.TorOff {
		tpc, err := listenTunnel(cfg)
		if err != nil {
			srv.Shutdown(context.Background())
			if pc != nil {
				pc.Close()
			}
			return err
		}
		serves.start(func() error { return serveTunnel(srv, tpc) })
		log.Info("tunnel listener for clients through Tor exits", "addr", tpc.LocalAddr().String())
	}
	// The admin listener comes up before tor bootstraps (minutes on the
	// public network): /healthz must answer meanwhile, and /readyz says
	// "tor: not published" until the onion service is.
	closeAdmin, err := startAdmin(cfg, srv, log)
	if err != nil {
		srv.Shutdown(context.Background())
		<-serves.wait()
		return err
	}
	// The admin listener outlives the drain: /readyz must answer 503 while
	// requests finish, or load balancers would not notice.
	defer closeAdmin()
	if cfg.ServesOnion() {
		var published atomic.Bool
		opts.Metrics.SetTorStatus(true, false)
		srv.AddReadyCheck("tor", func(context.Context) error {
			if !published.Load() {
				return errors.New("onion service not published")
			}
			return nil
		})
		onion, t, sig, err := c.onionUntilSignal(cfg, log, signals)
		if t != nil {
			defer t.Close()
		}
		if onion != nil {
			defer onion.Close()
			serves.start(func() error { return srv.ServeOnion(onion) })
			fmt.Fprintf(c.stdout, "onion address: %s\n", onion.Address(id))
			// Publish returned once the descriptor was uploaded; the
			// service stays published until Close at the end of serve.
			published.Store(true)
			opts.Metrics.SetTorStatus(true, true)
			defer func() {
				published.Store(false)
				opts.Metrics.SetTorStatus(true, false)
			}()
		}
		if err != nil || sig != nil {
			srv.Shutdown(context.Background())
			<-serves.wait()
			if sig != nil {
				log.Info("shutting down before the onion service was up", "signal", sig.String())
				return nil
			}
			return err
		}
	}
	served := serves.wait()

	stop := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.Duration)
		defer cancel()
		return srv.Shutdown(ctx)
	}
	select {
	case sig := <-signals:
		log.Info("shutting down", "signal", sig.String(), "timeout", cfg.ShutdownTimeout.String())
		err := drain(signals, stop)
		if errors.Is(err, errForced) {
			return err
		}
		if err != nil {
			// Requests cut short were never acknowledged, so clients retry
			// them; the shutdown the operator asked for still happened.
			log.Warn("shutdown timed out", "err", err)
		}
		return <-served
	case err := <-served:
		// Serve stopped by itself: the socket failed. Drain what is left.
		if serr := stop(); serr != nil {
			log.Warn("shutdown after serve failure", "err", serr)
		}
		return err
	}
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

// openObserverRecord creates the observer record's file. An existing
// file is refused rather than overwritten: it holds an earlier run.
func openObserverRecord(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("observer_record: %s exists (an earlier run's record); move it away or choose another path", path)
	}
	if err != nil {
		return nil, fmt.Errorf("observer_record: %w", err)
	}
	return f, nil
}
