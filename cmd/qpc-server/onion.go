package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/tor"
	"github.com/quicprochat/qpc/tor/tunnel"
)

const onionUsage = `Usage:
  qpc-server onion add-client NAME [--key KEY] [flags]
      authorize a client of the onion service (takes effect at the next start).
      Without --key a key pair is made and the client's credential printed:
      give it to the client (tor's <onion>:descriptor:x25519:<key> format).
      With --key descriptor:x25519:<base32 public key> the client keeps its
      private key to itself.
  qpc-server onion remove-client NAME [flags]
  qpc-server onion list-clients [flags]

Client authorization is on when onion_client_auth = true (--onion-client-auth).
`

// onion runs `qpc-server onion ...`, which manages the keys of clients
// authorized to reach the onion service.
func (c *cli) onion(args []string) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(c.stdout, onionUsage)
		return exitOK
	}
	sub, args := args[0], args[1:]
	var name string
	if sub == "add-client" || sub == "remove-client" {
		// The name may come before or after the flags.
		if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
			name, args = args[0], args[1:]
		}
	} else if sub != "list-clients" {
		fmt.Fprintf(c.stderr, "qpc-server onion: unknown command %q\n\n%s", sub, onionUsage)
		return exitUsage
	}
	fset := flag.NewFlagSet("qpc-server onion "+sub, flag.ContinueOnError)
	fset.SetOutput(io.Discard)
	flags := server.ConfigFlags{}
	flags.Register(fset)
	key := fset.String("key", "", "the client's public key, descriptor:x25519:<base32> (add-client)")
	// Flags may surround the name: parse, take a positional, go on.
	for {
		if err := fset.Parse(args); err != nil {
			fmt.Fprintf(c.stderr, "qpc-server onion %s: %v\n", sub, err)
			return exitUsage
		}
		if fset.NArg() == 0 {
			break
		}
		if name != "" || sub == "list-clients" {
			fmt.Fprintf(c.stderr, "qpc-server onion %s: unexpected argument %q\n", sub, fset.Arg(0))
			return exitUsage
		}
		name, args = fset.Arg(0), fset.Args()[1:]
	}
	if name == "" && sub != "list-clients" {
		fmt.Fprintf(c.stderr, "qpc-server onion %s: a client name is required\n\n%s", sub, onionUsage)
		return exitUsage
	}
	cfg, err := server.LoadConfig(flags, c.lookupEnv)
	if err != nil {
		fmt.Fprintf(c.stderr, "qpc-server onion %s: %v\n", sub, err)
		return exitError
	}
	switch sub {
	case "add-client":
		err = c.addClient(cfg, name, *key)
	case "remove-client":
		err = tor.RemoveClient(cfg.OnionClientsDir(), name)
		if err == nil {
			fmt.Fprintf(c.stderr, "removed %s; it loses access at the next start of the server\n", name)
		}
	case "list-clients":
		var clients []tor.AuthorizedClient
		clients, err = tor.Clients(cfg.OnionClientsDir())
		for _, cl := range clients {
			fmt.Fprintf(c.stdout, "%s\t%s\n", cl.Name, cl.Key)
		}
	}
	if err != nil {
		fmt.Fprintf(c.stderr, "qpc-server onion %s: %v\n", sub, err)
		return exitError
	}
	return exitOK
}

func (c *cli) addClient(cfg *server.Config, name, keyText string) error {
	onionKey, err := tor.LoadOrCreateOnionKey(cfg.OnionKeyPath())
	if err != nil {
		return err
	}
	id := tor.OnionID(onionKey.Public().(ed25519.PublicKey))
	if keyText != "" {
		k, err := tor.ParseClientKey(keyText)
		if err != nil {
			return err
		}
		if err := tor.AddClient(cfg.OnionClientsDir(), name, k); err != nil {
			return err
		}
		fmt.Fprintf(c.stderr, "authorized %s; it gains access at the next start of the server\n", name)
		return nil
	}
	cred, err := tor.NewClientCredential(id)
	if err != nil {
		return err
	}
	if err := tor.AddClient(cfg.OnionClientsDir(), name, cred.Public()); err != nil {
		return err
	}
	// The private key goes to stdout once and is not kept: the server
	// needs only the public half.
	fmt.Fprintln(c.stdout, cred.String())
	fmt.Fprintf(c.stderr, "authorized %s; give the line above to the client (keep it secret: it is the client's key); it works from the next start of the server\n", name)
	if !cfg.OnionClientAuth {
		fmt.Fprintf(c.stderr, "note: client authorization is off; turn it on with onion_client_auth = true or --onion-client-auth\n")
	}
	return nil
}

// onionAddress prints the onion form of the address if there is an onion
// key, creating it when the configuration serves an onion, and returns it
// ("" when there is none).
func (c *cli) onionAddress(cfg *server.Config, id *server.Identity) (string, error) {
	var key ed25519.PrivateKey
	var err error
	if cfg.ServesOnion() {
		key, err = tor.LoadOrCreateOnionKey(cfg.OnionKeyPath())
	} else {
		key, err = tor.LoadOnionKey(cfg.OnionKeyPath())
		if errors.Is(err, fs.ErrNotExist) {
			return "", nil // never served as an onion: nothing to print
		}
	}
	if err != nil {
		return "", err
	}
	host := net.JoinHostPort(tor.OnionID(key.Public().(ed25519.PublicKey))+".onion", strconv.Itoa(cfg.OnionPort))
	addr := id.Address(host).String()
	fmt.Fprintln(c.stdout, addr)
	return addr, nil
}

// startTor starts our own tor or attaches to the configured one, showing
// the bootstrap as a progress bar.
func (c *cli) startTor(ctx context.Context, cfg *server.Config, log *slog.Logger) (*tor.Tor, error) {
	bar := newProgressBar(c.stderr)
	defer bar.done()
	if cfg.TorControl != server.TorOff {
		pass, _ := c.lookupEnv("QPC_TOR_CONTROL_PASSWORD")
		log.Info("attaching to tor", "control", cfg.TorControl)
		return tor.Attach(ctx, cfg.TorControl, pass, bar.report)
	}
	torrc := ""
	if cfg.TorConfig != server.TorOff {
		b, err := os.ReadFile(cfg.TorConfig)
		if err != nil {
			return nil, fmt.Errorf("tor_config: %w", err)
		}
		torrc = string(b)
	}
	log.Info("starting tor", "binary", cfg.TorBinary, "data_dir", cfg.TorDataDir())
	return tor.Start(ctx, tor.Config{DataDir: cfg.TorDataDir(), ExePath: cfg.TorBinary, Torrc: torrc, Progress: bar.report})
}

// onionKeys loads (or creates) the onion key and the authorized client
// keys, before tor is started, so that a configuration error shows at
// once rather than after the bootstrap.
func onionKeys(cfg *server.Config) (ed25519.PrivateKey, []tor.ClientKey, error) {
	key, err := tor.LoadOrCreateOnionKey(cfg.OnionKeyPath())
	if err != nil {
		return nil, nil, err
	}
	if !cfg.OnionClientAuth {
		return key, nil, nil
	}
	list, err := tor.Clients(cfg.OnionClientsDir())
	if err != nil {
		return nil, nil, err
	}
	if len(list) == 0 {
		// An empty list would publish an open service: refuse rather
		// than silently drop the protection asked for.
		return nil, nil, fmt.Errorf("onion_client_auth is on but %s holds no client keys (qpc-server onion add-client NAME)", cfg.OnionClientsDir())
	}
	var clients []tor.ClientKey
	for _, cl := range list {
		clients = append(clients, cl.Key)
	}
	return key, clients, nil
}

// startOnion publishes the onion service through t.
func (c *cli) startOnion(ctx context.Context, cfg *server.Config, t *tor.Tor, key ed25519.PrivateKey, clients []tor.ClientKey) (*server.Onion, error) {
	bar := newProgressBar(c.stderr)
	defer bar.done()
	return server.ListenOnion(ctx, server.OnionOptions{
		Tor: t, Key: key, Port: cfg.OnionPort, Listen: cfg.OnionListen, Clients: clients, Progress: bar.report,
	})
}

// listenTunnel opens the clearnet TCP tunnel listener (tunnel_listen).
func listenTunnel(cfg *server.Config) (*tunnel.PacketConn, error) {
	ln, err := net.Listen("tcp", cfg.TunnelListen)
	if err != nil {
		return nil, fmt.Errorf("tunnel_listen: %w", err)
	}
	return tunnel.Server(ln, tunnel.Options{}), nil
}

// serveTunnel serves a TCP tunnel; clients behind Tor exits share the
// exits' addresses, so it counts as the tor transport.
func serveTunnel(srv *server.Server, pc *tunnel.PacketConn) error {
	return srv.ServeTransport(pc, metrics.TransportTor)
}

// serving runs listeners' Serve loops as they come up and reports once,
// through wait: the first error as soon as it happens, or nil when all
// have returned nil.
type serving struct {
	results chan error
	n       int
	once    sync.Once
	out     chan error
}

func newServing() *serving {
	return &serving{results: make(chan error, 8), out: make(chan error, 1)}
}

// start runs f; call it before wait.
func (s *serving) start(f func() error) {
	s.n++
	go func() { s.results <- f() }()
}

func (s *serving) wait() <-chan error {
	s.once.Do(func() {
		go func() {
			var first error
			for range s.n {
				if err := <-s.results; err != nil && first == nil {
					first = err
					s.out <- err
				}
			}
			if first == nil {
				s.out <- nil
			}
		}()
	})
	return s.out
}

// progressBar draws tor's progress on a terminal as one line redrawn in
// place, and elsewhere (logs, pipes) as a line per step of 10%.
type progressBar struct {
	w    io.Writer
	tty  bool
	mu   sync.Mutex
	last int
	drew bool
}

func newProgressBar(w io.Writer) *progressBar {
	tty := false
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progressBar{w: w, tty: tty, last: -10}
}

func (b *progressBar) report(p tor.Progress) {
	b.mu.Lock()
	defer b.mu.Unlock()
	label := map[tor.Stage]string{tor.StageBootstrap: "tor bootstrap", tor.StagePublish: "onion service", tor.StageConnect: "circuit"}[p.Stage]
	const width = 30
	filled := p.Percent * width / 100
	line := fmt.Sprintf("%-13s [%s%s] %3d%%  %s (%s)", label, strings.Repeat("#", filled), strings.Repeat(".", width-filled),
		p.Percent, p.Summary, p.Elapsed.Round(time.Second))
	if b.tty {
		fmt.Fprintf(b.w, "\r\033[K%s", line)
		b.drew = true
		return
	}
	if p.Percent >= b.last+10 || p.Percent == 100 && b.last != 100 {
		fmt.Fprintln(b.w, line)
		b.last = p.Percent
	}
}

func (b *progressBar) done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tty && b.drew {
		fmt.Fprintln(b.w)
	}
}

// onionUntilSignal starts tor and publishes the onion service, which can
// take minutes on the public network; a signal meanwhile cancels the wait
// and is returned.
func (c *cli) onionUntilSignal(cfg *server.Config, log *slog.Logger, signals <-chan os.Signal) (*server.Onion, *tor.Tor, os.Signal, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	caught := make(chan os.Signal, 1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case sig := <-signals:
			caught <- sig
			cancel()
		case <-stop:
		}
	}()
	finish := func() os.Signal {
		close(stop)
		wg.Wait()
		select {
		case sig := <-caught:
			return sig
		default:
			return nil
		}
	}
	key, clients, err := onionKeys(cfg)
	if err != nil {
		return nil, nil, finish(), err
	}
	t, err := c.startTor(ctx, cfg, log)
	if err != nil {
		return nil, nil, finish(), err
	}
	onion, err := c.startOnion(ctx, cfg, t, key, clients)
	if err != nil {
		return nil, t, finish(), err
	}
	return onion, t, finish(), nil
}
