package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/wire"
)

// QUIC application error codes used when closing a connection.
const (
	closeNormal    quic.ApplicationErrorCode = 0
	closeProtocol  quic.ApplicationErrorCode = 1
	closeGoingAway quic.ApplicationErrorCode = 2
	closeRefused   quic.ApplicationErrorCode = 3 // a connection limit; the hello carried the Error
)

// Server is a delivery service. It is safe for concurrent use.
type Server struct {
	opts   Options
	tls    *tls.Config
	quic   *quic.Config
	limits wire.Limits
	hub    *hub
	log    *slog.Logger
	// readers pools request readers: each holds a 4 KiB read buffer and a
	// record buffer, which would otherwise be allocated per request.
	readers sync.Pool

	mu         sync.RWMutex // guards draining against inflight.Add
	draining   bool
	inflight   sync.WaitGroup
	listeners  []*quic.Listener
	transports []*quic.Transport
	packets    []net.PacketConn
	conns      map[*quic.Conn]struct{}

	connLimits connLimiter // connection counts for MaxConns and MaxConnsPerAddr
	ktLimits   *ktLimiter  // KTLimits' budgets (kt_handler.go)

	sources        *sourceTable   // streams and delivery bytes per source and in total (sources.go)
	requests       *requestBudget // RequestBytes (requests.go)
	pageMsgs       int            // messages per delivery page
	maxDeliverable int            // MaxDeliverable(Policy)
	readyMu        sync.Mutex     // guards readyChecks
	readyCheck     []readyCheck   // extra /readyz conditions (AddReadyCheck)

	subsCtx    context.Context // cancelled when draining starts
	subsCancel context.CancelFunc
	purgeStop  chan struct{}
	purgeDone  chan struct{}
	keptDay    time.Time          // the day keepSubscribedInUse last ran (purge loop only)
	wakeStop   context.CancelFunc // ends the store's wake-up listener (wake.go); nil without one
	wakeDone   chan struct{}
	closed     atomic.Bool
	connIDs    atomic.Uint64 // numbers connections for ConnInfo

	refusedIDs atomic.Uint64  // numbers refused connections in the observer record
	connsLive  sync.WaitGroup // handleConn calls, waited for by Shutdown when Observer is set
	obsStop    chan struct{}  // ends warnObserver
	obsDone    chan struct{}
}

// New builds a server. It starts the background expiry sweep at once.
func New(opts Options) (*Server, error) {
	if opts.Identity == nil || opts.Store == nil {
		return nil, errors.New("server: Identity and Store are required")
	}
	opts.setDefaults()
	tlsConf, err := opts.Identity.TLSConfig()
	if err != nil {
		return nil, err
	}
	if err := wire.CheckVersionWindow(opts.Versions); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	// One ALPN identifier per accepted version, newest first: crypto/tls
	// picks the server's first that the client offers, so the TLS layer
	// already agrees on the highest common version (docs/compatibility.md).
	tlsConf.NextProtos = wire.ALPNs(opts.Versions)
	// The envelope limit leaves room for the Send and Delivery headers in
	// the largest bucket (docs/protocol.md §4.3).
	maxEnv := wire.MaxEnvelope(opts.Policy)
	if maxEnv <= 0 {
		return nil, fmt.Errorf("server: largest bucket %d leaves no room for an envelope", opts.Policy.Max())
	}
	pageMsgs, err := deliveryPage(&opts)
	if err != nil {
		return nil, err
	}
	if err := checkSourceBudgets(&opts); err != nil {
		return nil, err
	}
	if err := checkRequestBudgets(&opts); err != nil {
		return nil, err
	}
	s := &Server{
		opts: opts,
		tls:  tlsConf,
		quic: &quic.Config{
			HandshakeIdleTimeout:  opts.HandshakeTimeout,
			MaxIdleTimeout:        opts.IdleTimeout,
			MaxIncomingStreams:    int64(opts.MaxStreams),
			MaxIncomingUniStreams: -1, // the protocol uses bidirectional streams only
			// What QUIC may hold received but not yet read (requests.go):
			// per stream two records of the largest bucket, per
			// connection four. quic-go's defaults (up to 6 MiB and
			// 15 MiB) let a connection park 15 MiB whenever the server
			// reads slower than it is sent to.
			InitialStreamReceiveWindow:     uint64(2 * opts.Policy.Max()),
			MaxStreamReceiveWindow:         uint64(2 * opts.Policy.Max()),
			InitialConnectionReceiveWindow: uint64(quicConnWindowRecords * opts.Policy.Max()),
			MaxConnectionReceiveWindow:     uint64(quicConnWindowRecords * opts.Policy.Max()),
		},
		limits: wire.Limits{
			MaxEnvelope:   uint32(maxEnv),
			MaxFetch:      wire.MaxFetchLimit,
			MaxAckIDs:     wire.MaxAckIDs,
			QuotaMessages: uint32(opts.Quota.MaxMessages),
			QuotaBytes:    uint64(opts.Quota.MaxBytes),
			TTLSeconds:    uint32(opts.TTL / time.Second),
		},
		hub:       newHub(opts.MaxSubsPerMailbox, wakeTagger(opts.Store)),
		log:       opts.Logger,
		conns:     make(map[*quic.Conn]struct{}),
		purgeStop: make(chan struct{}),
		purgeDone: make(chan struct{}),

		sources:        newSourceTable(&opts),
		pageMsgs:       pageMsgs,
		maxDeliverable: MaxDeliverable(opts.Policy),
		ktLimits:       newKTLimiter(opts.KTLimits, opts.Now()),
		requests:       newRequestBudget(opts),
	}
	s.readers.New = func() any { return wire.NewReader(nil, opts.Policy) }
	s.subsCtx, s.subsCancel = context.WithCancel(context.Background())
	s.startWakes()
	go s.purgeLoop()
	if opts.Observer != nil {
		s.log.Warn(observerWarning)
		s.obsStop, s.obsDone = make(chan struct{}), make(chan struct{})
		go func() { defer close(s.obsDone); s.warnObserver(s.obsStop) }()
	}
	return s, nil
}

// MaxDeliverable is the longest envelope a Delivery record can carry in
// policy's largest bucket. Every envelope a server accepted under a
// policy is at most this long; one stored under a larger policy and
// longer than this can no longer be delivered.
func MaxDeliverable(policy padding.Policy) int {
	return wire.MaxDelivered(policy)
}

// Limits returns what the server announces in ServerHello.
func (s *Server) Limits() wire.Limits { return s.limits }

// Serve accepts connections on pc until Shutdown, which closes pc. It
// returns nil after a Shutdown, or the error that stopped the listener.
// Connections on pc count as clearnet (metrics.TransportUDP): the
// per-address connection limit applies to them.
func (s *Server) Serve(pc net.PacketConn) error {
	return s.ServeTransport(pc, metrics.TransportUDP)
}

// ServeTransport is Serve for a named transport: metrics.TransportUDP
// (clearnet), or metrics.TransportTor for QUIC tunneled through the onion
// service, where every client shares the tunnel's address, so the
// per-address limits are not applied; MaxConnsTor caps them together.
func (s *Server) ServeTransport(pc net.PacketConn, transport string) error {
	ln, err := s.listen(pc, transport)
	if err != nil || ln == nil {
		return err
	}
	return s.accept(ln, transport)
}

// listen opens the QUIC listener on pc and registers it, so that Ready
// counts it from the moment listen returns; it returns nil and no error
// when the server is already draining (pc is then closed).
func (s *Server) listen(pc net.PacketConn, transport string) (*quic.Listener, error) {
	tr := &quic.Transport{Conn: pc}
	conf := s.quic
	// A tunnel (tor/tunnel) fixes the packet size and needs a longer
	// handshake; it fits the QUIC configuration itself.
	if t, ok := pc.(quicConfigurer); ok {
		conf = t.QUICConfig(conf)
	}
	ln, err := tr.Listen(s.tls, conf)
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		ln.Close()
		tr.Close()
		pc.Close()
		return nil, nil
	}
	s.listeners = append(s.listeners, ln)
	s.transports = append(s.transports, tr)
	s.packets = append(s.packets, pc)
	s.mu.Unlock()
	s.log.Info("listening", "transport", transport, "addr", pc.LocalAddr().String())
	return ln, nil
}

// accept serves connections from a listener that listen registered until
// Shutdown closes it.
func (s *Server) accept(ln *quic.Listener, transport string) error {
	for {
		conn, err := ln.Accept(context.Background())
		if err != nil {
			s.mu.RLock()
			draining := s.draining
			s.mu.RUnlock()
			if draining {
				return nil
			}
			return fmt.Errorf("serve: %w", err)
		}
		if s.opts.Observer != nil {
			s.connsLive.Add(1)
			go func() { defer s.connsLive.Done(); s.handleConn(conn, transport) }()
			continue
		}
		go s.handleConn(conn, transport)
	}
}

// ListenAndServe listens on a UDP address and serves it.
func (s *Server) ListenAndServe(addr string) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return s.Serve(pc)
}

// Shutdown drains the server: it stops accepting connections and new
// requests, ends subscriptions, waits for requests in flight until ctx is
// done, then closes every connection. The store is left open for the
// caller to close.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.closed.Swap(true) {
		return nil
	}
	s.mu.Lock()
	s.draining = true
	listeners := slices.Clone(s.listeners)
	s.mu.Unlock()
	// Unready before anything closes, so /readyz tells load balancers to
	// stop sending while requests in flight finish.
	s.opts.Metrics.SetDraining()
	s.opts.Metrics.SetReady(false)
	for _, ln := range listeners {
		ln.Close()
	}
	s.subsCancel()
	close(s.purgeStop)

	done := make(chan struct{})
	go func() { s.inflight.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("shutdown: requests still in flight: %w", ctx.Err())
	}
	s.mu.Lock()
	for c := range s.conns {
		c.CloseWithError(closeGoingAway, "server shutting down")
	}
	transports, packets := slices.Clone(s.transports), slices.Clone(s.packets)
	s.mu.Unlock()
	for _, tr := range transports {
		tr.Close()
	}
	for _, pc := range packets {
		pc.Close()
	}
	<-s.purgeDone
	s.stopWakes()
	if o := s.opts.Observer; o != nil {
		// Every connection's close event goes in before the last flush.
		conns := make(chan struct{})
		go func() { s.connsLive.Wait(); close(conns) }()
		select {
		case <-conns:
		case <-ctx.Done():
		}
		close(s.obsStop)
		<-s.obsDone
		if ferr := o.Flush(); ferr != nil {
			err = errors.Join(err, ferr)
		}
	}
	s.log.Info("shut down")
	return err
}

// Draining reports whether Shutdown has begun.
func (s *Server) Draining() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.draining
}

// streamPreempted is the QUIC stream error code of a stream reset to give
// its room to a source holding less (sources.go).
const streamPreempted quic.StreamErrorCode = 1
