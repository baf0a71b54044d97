package server

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/server/accounts"
	"github.com/quicprochat/qpc/server/accounts/pgaccounts"
	"github.com/quicprochat/qpc/server/config"
	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/server/store/pgstore"
	"github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/tor"
	"github.com/quicprochat/qpc/tor/tunnel"
	"github.com/quicprochat/qpc/wire"
	bolterrors "go.etcd.io/bbolt/errors"
)

// RunOptions are what Run needs beyond the configuration: where to log and
// how to tell its caller what it serves. All are optional.
type RunOptions struct {
	// Logger receives the server's log; default cfg.NewLogger(os.Stderr).
	Logger *slog.Logger
	// Version labels the metrics (qpc_build_info); default "devel".
	Version string
	// Listening, if set, is called once for each listener as it starts
	// serving, from the goroutine that runs Run.
	Listening func(Listener)
	// TorProgress, if set, receives tor's bootstrap and the onion
	// service's publication as they advance.
	TorProgress func(tor.Progress)
	// TorControlPassword authenticates to tor_control, when set.
	TorControlPassword string
}

// ListenerKind names one of the listeners Run opens.
type ListenerKind string

// The listeners, in the order Run opens them.
const (
	ListenerKT     ListenerKind = "kt"     // kt_listen: the read-only tlog-tiles of the KT log
	ListenerQUIC   ListenerKind = "quic"   // listen: the clearnet UDP listener clients dial
	ListenerTunnel ListenerKind = "tunnel" // tunnel_listen: QUIC over TCP, for clients behind Tor exits
	ListenerAdmin  ListenerKind = "admin"  // admin_listen: /healthz, /readyz, /metrics
	ListenerOnion  ListenerKind = "onion"  // the onion service
)

// Listener says that one listener serves.
type Listener struct {
	Kind ListenerKind
	// Addr is the bound host:port (for ListenerOnion, <id>.onion:port).
	Addr string
	// Address is what clients dial, for ListenerQUIC and ListenerOnion: the
	// configured host (what the operator chose to expose) with the bound
	// port, pinned to the server key.
	Address wire.Address
}

// errInitKeyExists explains why InitDataDir stops where CreateIdentity
// found a key: every client has pinned it, so the message says what to do
// instead.
var errInitKeyExists = errors.New("refusing to replace the existing server key: every client pins it, a new key would lock them all out (qpc-server address prints the current address)")

// InitDataDir creates the data directory (0700), the server key and, if
// there is none, a commented default qpc-server.toml (0600). The key
// comes first so that a refused init changes nothing. note, if not nil,
// reports each step. It is `qpc-server init`, and what Run does on a
// first start.
func InitDataDir(cfg *config.Config, note func(format string, args ...any)) (*Identity, error) {
	if note == nil {
		note = func(string, ...any) {}
	}
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
	id, err := CreateIdentity(dir)
	if errors.Is(err, ErrKeyExists) {
		return nil, fmt.Errorf("%s: %w", filepath.Join(cfg.DataDir, KeyFile), errInitKeyExists)
	}
	if err != nil {
		return nil, err
	}
	note("created server key %s", filepath.Join(cfg.DataDir, KeyFile))
	f, err := os.OpenFile(cfg.FilePath(), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case errors.Is(err, fs.ErrExist):
		note("kept existing %s", cfg.FilePath())
	case err != nil:
		return nil, fmt.Errorf("write config file: %w", err)
	default:
		_, werr := f.Write(config.DefaultFile())
		if err := errors.Join(werr, f.Close()); err != nil {
			return nil, fmt.Errorf("write config file: %w", err)
		}
		note("wrote %s", cfg.FilePath())
	}
	return id, nil
}

// Run is the composition root of qpc-server: it opens everything the
// configuration names — the server key (initialising the data directory
// on first use), the message store, accounts, the token issuer, the
// key-transparency directory and its listener, metrics, the observer
// record — and serves on every configured listener (clearnet, tunnel,
// admin, onion) until ctx is done. Then it drains: /readyz turns 503,
// requests in flight get shutdown_timeout to finish, and the store is
// closed. It returns nil after a clean drain, also when the drain timed
// out (requests cut short were never acknowledged, so clients retry them).
//
// A ctx done before the listeners are up stops Run as soon as they are.
func Run(ctx context.Context, cfg *config.Config, o RunOptions) error {
	log := o.Logger
	if log == nil {
		log = cfg.NewLogger(os.Stderr)
	}
	if o.Version == "" {
		o.Version = "devel"
	}
	if o.Listening == nil {
		o.Listening = func(Listener) {}
	}
	// Nodes sharing a PostgreSQL store share one key set: checked before
	// any key is made (docs/adr/0039).
	book, err := openKeyBook(ctx, cfg)
	if err != nil {
		return err
	}
	if book != nil {
		defer book.Close()
	}
	id, err := LoadIdentity(cfg.DataDir)
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(cfg.StorePath()); serr == nil {
			// A store without its key is a restore or a mistake, not a
			// first start: a new key would change the pin every client
			// holds, so that takes an explicit init.
			return fmt.Errorf("%s holds a store but no server key: restore %s, or run qpc-server init to create a new key (clients then need the new address)",
				cfg.DataDir, KeyFile)
		}
		log.Info("no server key yet: initialising the data directory", "dir", cfg.DataDir)
		id, err = InitDataDir(cfg, func(format string, args ...any) { log.Info(fmt.Sprintf(format, args...)) })
	}
	if err != nil {
		return err
	}
	if book != nil {
		if err := checkKeySet(ctx, cfg, id, book); err != nil {
			return err
		}
		book.Close()
	}
	opts, storeOpts, err := OptionsFromConfig(cfg)
	if err != nil {
		return err
	}
	storeOpts.Logger = log
	// Metrics exist before the store opens, so its commit hook feeds them
	// from the first transaction.
	opts.Metrics = metrics.New(o.Version)
	storeOpts.OnCommit = CommitObserver(opts.Metrics)
	if cfg.StorePostgres() {
		// The nodes name mailboxes in their wakes by tags under a key
		// derived from tokens.key, which they share (ADR 0038, 0039).
		secret, err := LoadOrCreateTokenSecret(cfg.DataDir)
		if err != nil {
			return err
		}
		if storeOpts.WakeKey, err = store.DeriveWakeKey(secret); err != nil {
			return err
		}
	}
	st, err := openStore(ctx, cfg, storeOpts)
	if errors.Is(err, bolterrors.ErrTimeout) {
		return fmt.Errorf("store %s is locked by another process (is another qpc-server running on this data directory?)", cfg.StorePath())
	}
	if over := (*store.OversizeError)(nil); errors.As(err, &over) {
		// Bucket sizes are whole records: the longest envelope plus the
		// Delivery record around it.
		need := over.Largest + (opts.Policy.Max() - MaxDeliverable(opts.Policy))
		return fmt.Errorf("%w; the padding policy (buckets %v) cannot deliver them, and each would block its mailbox: "+
			"keep a largest bucket of at least %d bytes until they are delivered or expire (message_ttl %s after arrival, by %s)",
			err, cfg.Buckets, need, cfg.MessageTTL, over.Newest.Add(cfg.MessageTTL.Duration).Add(time.Minute).UTC().Format(time.DateOnly))
	}
	if err != nil {
		return err
	}
	if cfg.StorePostgres() {
		log.Info("store: mailboxes, messages, spent tokens and accounts in PostgreSQL; key transparency in the data directory", "dir", cfg.DataDir)
	}
	// From here on the store is closed on every path, so that the writer
	// commits what it queued and the file lock is released.
	err = run(ctx, cfg, o, log, id, st, opts)
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

// openStore opens the store the configuration names: the embedded bbolt
// file in the data directory, or PostgreSQL.
func openStore(ctx context.Context, cfg *config.Config, o store.Options) (store.Store, error) {
	if cfg.StorePostgres() {
		st, err := pgstore.Open(ctx, cfg.Store, o)
		if err != nil {
			return nil, err
		}
		return st, nil
	}
	st, err := store.Open(cfg.StorePath(), o)
	if err != nil {
		return nil, err
	}
	return st, nil
}

// openAccountStore opens the account store beside the mailbox store: in
// the same PostgreSQL database (tables of its own) when the store is
// PostgreSQL, else the bbolt file accounts.db in the data directory.
func openAccountStore(ctx context.Context, cfg *config.Config, log *slog.Logger) (accounts.Store, error) {
	if cfg.StorePostgres() {
		st, err := pgaccounts.Open(ctx, cfg.Store, pgaccounts.Options{Logger: log})
		if err != nil {
			return nil, err
		}
		return st, nil
	}
	st, err := accounts.OpenBolt(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	return st, nil
}

// run opens what lives beside the store and serves.
func run(ctx context.Context, cfg *config.Config, o RunOptions, log *slog.Logger, id *Identity, st store.Store, opts Options) error {
	// Accounts and the token issuer: their keys live in the data dir beside
	// the TLS key; the OPAQUE server identity is the pin clients know.
	pin := id.Pin()
	keys, err := accounts.LoadOrCreateKeys(cfg.DataDir, pin[:])
	if err != nil {
		return err
	}
	acctStore, err := openAccountStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	accts, err := accounts.New(acctStore, keys, cfg.AccountOptions())
	if err != nil {
		acctStore.Close()
		return err
	}
	defer accts.Close()
	secret, err := LoadOrCreateTokenSecret(cfg.DataDir)
	if err != nil {
		return err
	}
	issuer, err := tokens.NewIssuer(secret, tokens.WithEpochLength(cfg.TokenEpoch.Duration))
	if err != nil {
		return err
	}
	opts.Accounts, opts.Tokens = accts, issuer
	ktDir, stopKT, ktReady, err := startKT(cfg, log, issuer, o.Listening)
	if err != nil {
		return err
	}
	defer stopKT()
	opts.KT = ktDir
	WatchStore(opts.Metrics, st)
	if cfg.ObserverRecord != config.ObserverOff {
		f, err := openObserverRecord(cfg.ObserverRecord)
		if err != nil {
			return err
		}
		// Shutdown flushes the record; the file closes after it.
		defer f.Close()
		if opts.Observer, err = NewObserver(f); err != nil {
			return err
		}
	}
	opts.Identity, opts.Store, opts.Logger = id, st, log
	return serve(ctx, cfg, o, log, opts, ktReady)
}

func serve(ctx context.Context, cfg *config.Config, o RunOptions, log *slog.Logger, opts Options, ktReady func(context.Context) error) error {
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
	srv, err := New(opts)
	if err != nil {
		if pc != nil {
			pc.Close()
		}
		return err
	}
	if cfg.KT {
		srv.AddReadyCheck("kt", ktReady)
	}
	if p, ok := opts.Store.(interface{ Ping(context.Context) error }); ok {
		// A database the server cannot reach: not ready.
		srv.AddReadyCheck("store", p.Ping)
	}
	if opts.Accounts != nil && cfg.StorePostgres() {
		// The account store has a pool of its own.
		srv.AddReadyCheck("accounts", opts.Accounts.Ping)
	}
	// Clearnet listeners serve at once; the onion joins when tor is up,
	// which can take minutes on the public network.
	serves := newServing()
	// The admin listener comes up before tor bootstraps (minutes on the
	// public network): /healthz must answer meanwhile, and /readyz says
	// "tor: not published" until the onion service is. It comes up before
	// the QUIC listener is reported, too: whoever sees the address (the
	// binary prints it) finds /readyz and /metrics answering, rather than
	// a refused connection for a moment.
	closeAdmin, err := startAdmin(cfg, srv, log, o.Listening)
	if err != nil {
		if pc != nil {
			pc.Close() // not the server's yet
		}
		srv.Shutdown(context.Background())
		<-serves.wait()
		return err
	}
	// The admin listener outlives the drain: /readyz must answer 503 while
	// requests finish, or load balancers would not notice.
	defer closeAdmin()
	if pc != nil {
		host, _, _ := net.SplitHostPort(cfg.Listen)
		bound := net.JoinHostPort(host, strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port))
		// Registered before Listening reports it, so /readyz counts it.
		if err := serves.listen(srv, pc, metrics.TransportUDP); err != nil {
			srv.Shutdown(context.Background())
			<-serves.wait()
			return err
		}
		o.Listening(Listener{Kind: ListenerQUIC, Addr: pc.LocalAddr().String(), Address: opts.Identity.Address(bound)})
	}
	if cfg.TunnelListen != config.TorOff {
		ln, err := net.Listen("tcp", cfg.TunnelListen)
		if err != nil {
			srv.Shutdown(context.Background())
			<-serves.wait()
			return fmt.Errorf("tunnel_listen: %w", err)
		}
		tpc := tunnel.Server(ln, tunnel.Options{})
		// Clients behind Tor exits share the exits' addresses, so the
		// tunnel counts as the tor transport.
		if err := serves.listen(srv, tpc, metrics.TransportTor); err != nil {
			srv.Shutdown(context.Background())
			<-serves.wait()
			return err
		}
		log.Info("tunnel listener for clients through Tor exits", "addr", tpc.LocalAddr().String())
		o.Listening(Listener{Kind: ListenerTunnel, Addr: tpc.LocalAddr().String()})
	}
	if cfg.ServesOnion() {
		var published atomic.Bool
		opts.Metrics.SetTorStatus(true, false)
		srv.AddReadyCheck("tor", func(context.Context) error {
			if !published.Load() {
				return errors.New("onion service not published")
			}
			return nil
		})
		onion, t, err := startOnion(ctx, cfg, o, log)
		if t != nil {
			defer t.Close()
		}
		if onion != nil {
			defer onion.Close()
			if err := serves.listen(srv, onion.Conn, metrics.TransportTor); err != nil {
				srv.Shutdown(context.Background())
				<-serves.wait()
				return err
			}
			address := onion.Address(opts.Identity)
			o.Listening(Listener{Kind: ListenerOnion, Addr: address.Host, Address: address})
			// Publish returned once the descriptor was uploaded; the
			// service stays published until Close at the end of serve.
			published.Store(true)
			opts.Metrics.SetTorStatus(true, true)
			defer func() {
				published.Store(false)
				opts.Metrics.SetTorStatus(true, false)
			}()
		}
		if err != nil {
			srv.Shutdown(context.Background())
			<-serves.wait()
			if ctx.Err() != nil {
				log.Info("shutting down before the onion service was up")
				return nil
			}
			return err
		}
	}
	served := serves.wait()

	stop := func() error {
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.Duration)
		defer cancel()
		return srv.Shutdown(sctx)
	}
	select {
	case <-ctx.Done():
		log.Info("draining", "timeout", cfg.ShutdownTimeout.String())
		if err := stop(); err != nil {
			// Requests cut short were never acknowledged, so clients retry
			// them; the shutdown asked for still happened.
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

// startAdmin serves /healthz, /readyz and /metrics on admin_listen (TCP),
// unless it is "off". The returned func closes the listener.
func startAdmin(cfg *config.Config, srv *Server, log *slog.Logger, listening func(Listener)) (func(), error) {
	if cfg.AdminListen == config.AdminOff {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", cfg.AdminListen)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("admin listen %s: address already in use (choose another with --admin-listen, or off)", cfg.AdminListen)
	}
	if err != nil {
		return nil, fmt.Errorf("admin listen: %w", err)
	}
	hs := &http.Server{
		Handler:           srv.AdminHandler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	go hs.Serve(ln)
	log.Info("admin listening", "addr", ln.Addr().String(), "paths", "/healthz /readyz /metrics")
	listening(Listener{Kind: ListenerAdmin, Addr: ln.Addr().String()})
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		hs.Shutdown(ctx)
	}, nil
}

// tokenKeyWait bounds how long a start waits for the token keys to be
// committed before it serves anyway: with witnesses that do not answer, a
// publish-late log commits nothing, and the clients already registered
// should still reach their mailboxes (/readyz then says why it is not
// ready).
const tokenKeyWait = 30 * time.Second

// startKT opens the key-transparency directory and its read-only HTTP
// listener; stop closes both. With kt off it returns a nil directory.
//
// The listener serves the log as soon as the directory is open, before
// its first checkpoint is awaited: an auditing witness in the policy
// reads the epoch's update list from it before it cosigns.
//
// It returns once the token epoch length and the current token epoch's key
// are committed and served in the log (a new directory needs one KT
// epoch), or after tokenKeyWait: a client refuses tokens under a key it
// cannot find in the log, so a server that served before would fail
// every registration of its first second. ready fails while the current
// epoch's key is not served; it is a /readyz check.
func startKT(cfg *config.Config, log *slog.Logger, issuer *tokens.Issuer, listening func(Listener)) (d *kt.Directory, stop func(), ready func(context.Context) error, err error) {
	if !cfg.KT {
		return nil, func() {}, func(context.Context) error { return nil }, nil
	}
	keys, err := LoadOrCreateKTKeys(cfg.DataDir)
	if err != nil {
		return nil, nil, nil, err
	}
	var srv *http.Server
	var opened func(*kt.Directory)
	if cfg.KTListen != config.AdminOff {
		ln, err := net.Listen("tcp", cfg.KTListen)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("kt_listen: %w", err)
		}
		var handler atomic.Pointer[http.Handler]
		srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if h := handler.Load(); h != nil {
				(*h).ServeHTTP(w, r)
				return
			}
			http.Error(w, "key-transparency log opening", http.StatusServiceUnavailable)
		})}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Warn("key-transparency listener stopped", "err", err)
			}
		}()
		opened = func(d *kt.Directory) {
			h := KTHandler(d, cfg.KTPrefix)
			handler.Store(&h)
			log.Info("key-transparency log (read-only tlog-tiles)", "addr", ln.Addr().String(), "prefix", cfg.KTPrefix, "origin", keys.Signer.Name())
			listening(Listener{Kind: ListenerKT, Addr: ln.Addr().String()})
		}
	}
	stopHTTP := func() {
		if srv == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err = OpenKT(ctx, cfg, keys, log, opened)
	if err != nil {
		stopHTTP()
		return nil, nil, nil, fmt.Errorf("key transparency: %w", err)
	}
	// The token key of each epoch is committed in the log.
	pubCtx, pubCancel := context.WithCancel(context.Background())
	pubDone := make(chan struct{})
	var served atomic.Int64 // the newest token epoch with its key served, +1
	first := make(chan struct{})
	go func() {
		defer close(pubDone)
		PublishTokenKeysNotify(pubCtx, d, issuer, cfg.TokenEpoch.Duration, log, func(e uint32) {
			if served.Swap(int64(e)+1) == 0 {
				close(first)
			}
		})
	}()
	ready = func(context.Context) error {
		if cur := issuer.Epoch(); served.Load() < int64(cur)+1 {
			return fmt.Errorf("the token key of epoch %d is not committed yet", cur)
		}
		return nil
	}
	start := time.Now()
	select {
	case <-first:
		log.Debug("kt: token keys committed", "after", time.Since(start))
	case <-time.After(tokenKeyWait):
		log.Warn("kt: the token keys are not committed yet; serving anyway, registrations and token refills fail until they are (are the witnesses reachable?)", "waited", tokenKeyWait)
	}
	return d, func() {
		stopHTTP()
		pubCancel()
		<-pubDone
		d.Close()
	}, ready, nil
}

// startOnion starts tor (or attaches to the configured one) and publishes
// the onion service, which can take minutes on the public network; ctx
// done meanwhile ends the wait. The returned Tor, if not nil, must be
// closed even when err is not nil.
func startOnion(ctx context.Context, cfg *config.Config, o RunOptions, log *slog.Logger) (*Onion, *tor.Tor, error) {
	key, clients, err := OnionKeys(cfg)
	if err != nil {
		return nil, nil, err
	}
	var t *tor.Tor
	if cfg.TorControl != config.TorOff {
		log.Info("attaching to tor", "control", cfg.TorControl)
		t, err = tor.Attach(ctx, cfg.TorControl, o.TorControlPassword, o.TorProgress)
	} else {
		torrc := ""
		if cfg.TorConfig != config.TorOff {
			b, err := os.ReadFile(cfg.TorConfig)
			if err != nil {
				return nil, nil, fmt.Errorf("tor_config: %w", err)
			}
			torrc = string(b)
		}
		log.Info("starting tor", "binary", cfg.TorBinary, "data_dir", cfg.TorDataDir())
		t, err = tor.Start(ctx, tor.Config{DataDir: cfg.TorDataDir(), ExePath: cfg.TorBinary, Torrc: torrc, Progress: o.TorProgress})
	}
	if err != nil {
		return nil, nil, err
	}
	onion, err := ListenOnion(ctx, OnionOptions{
		Tor: t, Key: key, Port: cfg.OnionPort, Listen: cfg.OnionListen, Clients: clients, Progress: o.TorProgress,
	})
	if err != nil {
		return nil, t, err
	}
	return onion, t, nil
}

// OnionKeys loads (or creates) the onion key and the authorized client
// keys, before tor is started, so that a configuration error shows at
// once rather than after the bootstrap.
func OnionKeys(cfg *config.Config) (ed25519.PrivateKey, []tor.ClientKey, error) {
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

// listen registers a listener on pc with srv, so that Ready counts it
// once listen returns, and serves it like start.
func (s *serving) listen(srv *Server, pc net.PacketConn, transport string) error {
	ln, err := srv.listen(pc, transport)
	if err != nil || ln == nil {
		return err
	}
	s.start(func() error { return srv.accept(ln, transport) })
	return nil
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
