package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quicprochat/qpc/internal/ratelimit"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/server/accounts"
	"github.com/quicprochat/qpc/server/config"
	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/wire"
	"golang.org/x/sync/semaphore"
)

// Options configure a Server. Zero values take the defaults below.
type Options struct {
	Identity *Identity   // required
	Store    store.Store // required; the caller closes it after Shutdown

	Policy        padding.Policy // default padding.Default
	Quota         store.Quota    // per mailbox; default 10,000 messages, 256 MiB
	TTL           time.Duration  // message lifetime; default 21 days
	MailboxTTL    time.Duration  // a mailbox its owner has not fetched from for this long is deleted; default 90 days
	PurgeInterval time.Duration  // expiry sweep; default 10 minutes

	MaxStreams       int           // concurrent request streams per connection; default 100
	MaxConns         int           // concurrent connections, all transports; default 10,000
	MaxConnsPerAddr  int           // concurrent clearnet connections per source address (IPv6: per /64); default 64
	MaxConnsPerNet   int           // concurrent clearnet connections per IPv6 /48; default 256
	MaxConnsTor      int           // concurrent connections through the onion service; default MaxConns/2
	RequestRate      float64       // requests per second per connection (token bucket); default 200
	RequestBurst     int           // requests a connection may make at once above the rate; default 400
	HandshakeTimeout time.Duration // QUIC + hello; default 10 s (raise for Tor)
	IdleTimeout      time.Duration // QUIC idle timeout; default 60 s
	RequestTimeout   time.Duration // read one request / write one response; default 30 s

	// Delivery memory (delivery.go): envelope bytes Fetch and Subscribe
	// hold loaded but not yet written, per connection and in total.
	DeliveryConnBytes int64 // default 2 MiB
	DeliveryBytes     int64 // default 32 MiB (DefaultDeliveryBytes)
	// Per source (sources.go): an address (IPv6: /64), its /48 a
	// multiple; over Tor each connection. The server-wide caps are
	// shared max-min fairly.
	DeliverySourceBytes int64 // delivery bytes one source may hold; default 8 MiB
	MaxStreamsPerAddr   int   // request streams one source may hold across its connections; default 256
	MaxStreamsTotal     int   // request streams of all connections together; default 2,048
	MaxSubsPerMailbox   int   // subscriptions one mailbox keeps; a newer one replaces the oldest; default 4
	MaxSubsPerConn      int   // subscriptions one connection may hold; default 32

	// Request memory (requests.go): bytes the record buffers of request
	// streams hold while their records arrive, per connection and in total.
	RequestConnBytes int64 // default 2 MiB
	RequestBytes     int64 // default 32 MiB
	// RequestSourceBytes is one source's share of RequestBytes (sources.go
	// says what a source is); default 8 MiB.
	RequestSourceBytes int64

	// Tokens issues and redeems anonymous delivery tokens. With it (and
	// no Authorizer), every create and send must carry one token.
	Tokens     *tokens.Issuer
	TokenEpoch time.Duration // the issuer's epoch length; default tokens.DefaultEpochLength
	TokenQuota int           // tokens per account per epoch; default 1000
	// Accounts serves registration, login, sessions and token issuance,
	// and keeps the accounts' KeyPackage pools.
	Accounts *accounts.Service
	// KeyPackagePool is how many one-time KeyPackages one account's pool
	// may hold; default 100, at most 65,535 (KeyPackagesStored.Limit).
	KeyPackagePool int
	// KT is the key-transparency directory; nil: KT requests are refused
	// as unavailable. The caller starts and closes it.
	KT *kt.Directory
	// KTLimits bound what publishes and lookups may cost (kt_handler.go).
	KTLimits

	// Authorizer decides creates and sends. Default: a TokenAuthorizer
	// when Tokens is set, else OpenAccess (tests and benchmarks only,
	// with a warning in the log).
	Authorizer Authorizer
	// Versions are the protocol versions accepted, newest first: at most
	// N and N-1 (docs/compatibility.md). Default wire.SupportedVersions().
	Versions []uint16
	// Metrics receives the counters and histograms; nil records nothing.
	Metrics *metrics.Metrics
	Logger  *slog.Logger // default: slog.Default()
	Now     func() time.Time

	// Tap, if set, is handed every stream of every connection, the
	// version handshake's first, and the server uses the stream it
	// returns. It exists for harnesses that play a dishonest operator
	// (internal/hostile) or record what the server sees; the binaries
	// never set it. See tap.go.
	Tap StreamTap

	// Observer, if set, receives the observer record of the
	// traffic-analysis lab (observer.go, config key observer_record):
	// research only; the server warns in its log while it is set.
	Observer *Observer
}

func (o *Options) setDefaults() {
	if o.Policy.Max() == 0 {
		o.Policy = padding.Default
	}
	if o.Quota == (store.Quota{}) {
		o.Quota = store.Quota{MaxMessages: config.DefaultQuotaMessages, MaxBytes: config.DefaultQuotaBytes}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.TTL, config.DefaultMessageTTL)
	def(&o.MailboxTTL, config.DefaultMailboxTTL)
	def(&o.PurgeInterval, config.DefaultPurgeInterval)
	def(&o.HandshakeTimeout, config.DefaultHandshakeTimeout)
	def(&o.IdleTimeout, config.DefaultIdleTimeout)
	def(&o.RequestTimeout, config.DefaultRequestTimeout)
	if o.MaxStreams <= 0 {
		o.MaxStreams = config.DefaultMaxStreams
	}
	o.setLimitDefaults()
	o.setDeliveryDefaults()
	o.setSourceDefaults()
	o.setRequestDefaults()
	o.KTLimits.setDefaults()
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	def(&o.TokenEpoch, tokens.DefaultEpochLength)
	if o.TokenQuota <= 0 {
		o.TokenQuota = config.DefaultTokenQuota
	}
	if o.KeyPackagePool <= 0 {
		o.KeyPackagePool = config.DefaultKeyPackagePool
	}
	o.KeyPackagePool = min(o.KeyPackagePool, math.MaxUint16)
	if o.Authorizer == nil {
		if o.Tokens != nil {
			o.Authorizer = NewTokenAuthorizer(o.Tokens, o.TokenEpoch)
		} else {
			o.Authorizer = OpenAccess{}
		}
	}
	if _, open := o.Authorizer.(OpenAccess); open {
		o.Logger.Warn("delivery tokens are NOT required: anyone can create mailboxes and send; use this only for tests and benchmarks")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

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
		hub:       newHub(opts.MaxSubsPerMailbox),
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
	tr := &quic.Transport{Conn: pc}
	conf := s.quic
	// A tunnel (tor/tunnel) fixes the packet size and needs a longer
	// handshake; it fits the QUIC configuration itself.
	if t, ok := pc.(quicConfigurer); ok {
		conf = t.QUICConfig(conf)
	}
	ln, err := tr.Listen(s.tls, conf)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		ln.Close()
		tr.Close()
		pc.Close()
		return nil
	}
	s.listeners = append(s.listeners, ln)
	s.transports = append(s.transports, tr)
	s.packets = append(s.packets, pc)
	s.mu.Unlock()
	s.log.Info("listening", "transport", transport, "addr", pc.LocalAddr().String())
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

func (s *Server) track(c *quic.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.draining {
			return false
		}
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
	return true
}

func (s *Server) handleConn(conn *quic.Conn, transport string) {
	release, refusal := s.admit(conn, transport)
	if refusal != nil {
		s.refuseConn(conn, transport, refusal)
		return
	}
	defer release()
	if !s.track(conn, true) {
		conn.CloseWithError(closeGoingAway, "server shutting down")
		return
	}
	defer s.track(conn, false)
	s.opts.Metrics.ConnOpened(transport)
	defer s.opts.Metrics.ConnClosed(transport)

	tlsState := conn.ConnectionState().TLS
	binding, err := tlsState.ExportKeyingMaterial(wire.ExporterLabel, nil, wire.BindingSize)
	if err != nil {
		conn.CloseWithError(closeProtocol, "no TLS exporter")
		return
	}
	info := s.connInfo(conn, transport)
	obsID := ""
	if s.opts.Observer != nil {
		obsID = obsConn(info.ID)
		s.observeConn(obsID, transport)
		defer s.observe(obsEvent{conn: obsID, ev: obsClose})
	}
	if err := s.hello(conn, info, obsID); err != nil {
		s.log.Debug("handshake failed", "err", err)
		lingerClose(conn, closeProtocol, "handshake failed")
		return
	}
	cs := &connState{binding: binding, delivery: semaphore.NewWeighted(s.opts.DeliveryConnBytes), src: accountSource(info), keys: connSourceKeys(info), obsID: obsID}
	rate := ratelimit.NewBucket(s.opts.RequestRate, s.opts.RequestBurst, time.Now())
	for {
		qs, err := conn.AcceptStream(conn.Context())
		if err != nil {
			return
		}
		st := s.tapStream(info, qs)
		if !rate.Allow(time.Now()) {
			s.opts.Metrics.Refused(metrics.LimitRequestRate)
			// Not read: a refused stream is counted against no stream
			// cap, so it must not wait for its record (a stranger over
			// its rate would hold max_streams of them per connection).
			go s.refuseUnread(st, wire.Errorf(wire.CodeRateLimited, "request rate limit of this connection exceeded, retry later"))
			continue
		}
		s.mu.RLock()
		draining := s.draining
		if !draining {
			s.inflight.Add(1)
		}
		s.mu.RUnlock()
		if draining {
			s.opts.Metrics.Refused(metrics.LimitDraining)
			go s.refuse(cs, st, wire.Errorf(wire.CodeUnavailable, "server shutting down"))
			continue
		}
		// Counted against its source's and the server's stream caps
		// before anything of it is read; over a cap it is reset at once.
		entry, refusal := s.sources.admitStream(cs.keys, func() { resetStream(st) })
		if refusal != nil {
			s.inflight.Done()
			go s.refuseUnread(st, refusal)
			continue
		}
		go func() {
			defer s.inflight.Done()
			defer s.sources.releaseStream(entry)
			s.opts.Metrics.StreamStarted()
			defer s.opts.Metrics.StreamDone()
			s.handleStream(conn, cs, entry, st)
		}()
	}
}

// hello runs the version handshake on the connection's first stream
// (docs/protocol.md §4.1). Hello records use the fixed control bucket.
func (s *Server) hello(conn *quic.Conn, info ConnInfo, obsID string) error {
	ctx, cancel := context.WithTimeout(conn.Context(), s.opts.HandshakeTimeout)
	defer cancel()
	qs, err := conn.AcceptStream(ctx)
	if err != nil {
		return err
	}
	st := s.tapStream(info, qs)
	defer st.Close()
	deadline := time.Now().Add(s.opts.HandshakeTimeout)
	st.SetDeadline(deadline)
	r := wire.NewReader(st, padding.Control)
	m, err := r.ReadMessage()
	if err != nil {
		// A malformed hello gets its code; a stream that timed out or
		// ended early gets nothing (an INTERNAL answer would invite the
		// client to retry what is its own fault).
		if _, coded := wire.CodeOf(err); coded {
			s.observe(obsEvent{conn: obsID, ev: obsError, code: obsCode(err)})
			s.writeError(st, padding.Control, err)
		}
		return err
	}
	or := s.observeRequest(obsID, m, r.RecordSize())
	ch, ok := m.(*wire.ClientHello)
	if !ok {
		err := wire.Errorf(wire.CodeUnknownKind, "expected ClientHello")
		or.fail(err)
		s.writeError(st, padding.Control, err)
		return err
	}
	version, err := s.negotiate(conn, ch.Versions)
	if err != nil {
		s.opts.Metrics.RequestError(metrics.KindLabel(wire.KindClientHello), wire.CodeVersion)
		or.fail(err)
		s.writeError(st, padding.Control, err)
		return err
	}
	or.write()
	if err := wire.WriteMessage(st, padding.Control, &wire.ServerHello{
		Version: version, Policy: s.opts.Policy, Limits: s.limits,
	}); err != nil {
		return err
	}
	s.opts.Metrics.Hello(version)
	s.finishRead(st, r)
	return nil
}

// finishRead consumes the client's end of a request stream. quic-go hands
// a stream's slot back to the peer only once the FIN has been read (or the
// read side cancelled); a server that stops reading after the request
// record leaks a slot whenever the FIN comes in a later packet, and the
// client stalls after MaxStreams requests. Anything after the request is
// a protocol violation: the read side is cancelled instead.
func (s *Server) finishRead(st Stream, r *wire.Reader) {
	st.SetReadDeadline(time.Now().Add(s.opts.RequestTimeout))
	if !r.AtEOF() {
		st.CancelRead(0)
	}
}

// finishReadUnbuffered is finishRead once the reader has gone back to the
// pool; extra says whether it had read bytes after the request.
func (s *Server) finishReadUnbuffered(st Stream, extra bool) {
	if extra {
		st.CancelRead(0)
		return
	}
	st.SetReadDeadline(time.Now().Add(s.opts.RequestTimeout))
	var b [1]byte
	for {
		n, err := st.Read(b[:])
		if n > 0 || err != nil && !errors.Is(err, io.EOF) {
			st.CancelRead(0)
		}
		if n > 0 || err != nil {
			return
		}
	}
}

// refuseUnread answers a stream that a stream cap refuses with err
// without reading it, so that it costs nothing while it waits.
func (s *Server) refuseUnread(st Stream, err error) {
	st.CancelRead(0)
	st.SetWriteDeadline(time.Now().Add(min(s.opts.RequestTimeout, 2*time.Second)))
	s.writeError(st, s.opts.Policy, err)
	st.Close()
}

// resetStream ends a stream another source needs the room of: both
// directions are reset, so that whatever its handler waits for returns.
func resetStream(st Stream) {
	st.CancelRead(streamPreempted)
	st.CancelWrite(streamPreempted)
}

// streamPreempted is the QUIC stream error code of a stream reset to give
// its room to a source holding less (sources.go).
const streamPreempted quic.StreamErrorCode = 1

func (s *Server) refuse(cs *connState, st Stream, err error) {
	st.SetDeadline(time.Now().Add(s.opts.RequestTimeout))
	// A Health request is still answered while draining, so a prober
	// sees "draining" instead of an error. The record is read within the
	// request budgets like any other.
	r := s.readers.Get().(*wire.Reader)
	r.Reset(st, s.opts.Policy)
	charge := s.newCharge(cs, st)
	r.SetBudget(charge)
	defer func() {
		r.Reset(nil, s.opts.Policy)
		s.readers.Put(r)
		charge.release()
	}()
	m, rerr := charge.read(r)
	var or *obsReq
	if rerr == nil {
		or = s.observeRequest(cs.obsID, m, r.RecordSize())
	}
	if rerr == nil && m.Kind() == wire.KindHealth && s.Draining() {
		or.write()
		wire.WriteMessage(st, s.opts.Policy, &wire.HealthStatus{Status: wire.StatusDraining})
	} else {
		if or != nil {
			or.fail(err)
		} else {
			s.observe(obsEvent{conn: cs.obsID, ev: obsError, code: obsCode(err)})
		}
		s.writeError(st, s.opts.Policy, err)
	}
	st.CancelRead(0)
	st.Close()
}

// writeError sends err as an Error record. Errors without a protocol code
// are internal: their text stays in the debug log, not on the wire.
func (s *Server) writeError(w io.Writer, p padding.Policy, err error) {
	e := &wire.ErrorMessage{Code: wire.CodeInternal, Detail: "internal error"}
	var we *wire.Error
	if errors.As(err, &we) {
		e.Code, e.Detail = we.Code, we.Detail
	}
	wire.WriteMessage(w, p, e)
}

func (s *Server) handleStream(conn *quic.Conn, cs *connState, e *streamEntry, st Stream) {
	r := s.readers.Get().(*wire.Reader)
	r.Reset(st, s.opts.Policy)
	charge := s.newCharge(cs, st)
	r.SetBudget(charge)
	// The pooled reader goes back as soon as the request is read (an
	// account exchange reads more records), so that a stream waiting for
	// its answer does not hold its buffers.
	pooled, extra := true, false
	putReader := func() {
		if pooled {
			pooled = false
			r.Reset(nil, s.opts.Policy) // drop the stream and a large record buffer
			s.readers.Put(r)
			charge.release()
		}
	}
	subscribed := false
	defer func() {
		switch {
		case subscribed: // a subscription reads its stream to the end itself
		case pooled:
			s.finishRead(st, r)
			putReader()
		default:
			s.finishReadUnbuffered(st, extra)
		}
		st.Close()
	}()
	// The whole record must arrive within RequestTimeout, however slowly
	// its bytes trickle in.
	st.SetReadDeadline(time.Now().Add(s.opts.RequestTimeout))
	m, err := charge.read(r)
	if err != nil {
		if code, ok := wire.CodeOf(err); ok {
			s.log.Debug("bad request", "err", err)
			s.opts.Metrics.RequestError(metrics.KindUnread, code)
			st.CancelRead(0) // nothing more of this stream is read
			s.observe(obsEvent{conn: cs.obsID, ev: obsError, code: code.String()})
			st.SetWriteDeadline(time.Now().Add(s.opts.RequestTimeout))
			s.writeError(st, s.opts.Policy, err)
		} else {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// A stream that holds a slot without delivering its
				// request is cut off, so a stalling client cannot keep
				// its streams (or our goroutines) forever.
				s.opts.Metrics.Refused(metrics.LimitRequestTimeout)
				st.CancelRead(0)
			}
			st.CancelWrite(0)
		}
		return
	}
	kind := metrics.KindLabel(m.Kind())
	s.opts.Metrics.Request(kind)
	or := s.observeRequest(cs.obsID, m, r.RecordSize())
	if !wire.IsRequest(m.Kind()) || m.Kind() == wire.KindClientHello {
		s.opts.Metrics.RequestError(kind, wire.CodeUnknownKind)
		st.SetWriteDeadline(time.Now().Add(s.opts.RequestTimeout))
		err := wire.Errorf(wire.CodeUnknownKind, "record kind 0x%02x is not a request here", uint8(m.Kind()))
		or.fail(err)
		s.writeError(st, s.opts.Policy, err)
		return
	}
	if m.Kind() != wire.KindSubscribe { // a subscription lasts as long as the client wants
		defer s.opts.Metrics.ObserveRequest(kind, time.Now())
	}
	ctx, cancel := context.WithTimeout(st.Context(), s.opts.RequestTimeout)
	defer cancel()
	ctx = withReq(ctx, or)
	if m.Kind() != wire.KindAccountRequest {
		extra = r.Buffered() > 0
		putReader()
	}
	switch m := m.(type) {
	case *wire.Subscribe:
		// A subscription reads its stream itself, byte by byte.
		subscribed = true
		s.subscribe(conn, cs, e, st, m, or)
		return
	case *wire.AccountRequest:
		s.accountExchange(ctx, st, cs, r, func() (wire.Message, error) { return charge.read(r) }, m)
		return
	}
	resp, isKT, err := s.ktRequest(ctx, cs, m)
	if !isKT {
		resp, err = s.dispatch(ctx, cs, e, st, m)
	}
	st.SetWriteDeadline(time.Now().Add(s.opts.RequestTimeout))
	if err != nil {
		s.logFailure(m.Kind(), err)
		s.countError(kind, err)
		or.fail(err)
		s.writeError(st, s.opts.Policy, err)
		return
	}
	or.write()
	if resp != nil {
		wire.WriteMessage(st, s.opts.Policy, resp)
	}
}

func (s *Server) logFailure(kind wire.Kind, err error) {
	code, _ := wire.CodeOf(err)
	if code == wire.CodeInternal || code == wire.CodeUnavailable {
		s.log.Warn("request failed", "kind", uint8(kind), "code", code.String(), "err", err)
		return
	}
	s.log.Debug("request refused", "kind", uint8(kind), "code", code.String())
}

// dispatch runs one request. Fetch writes its own Delivery records and
// returns the closing FetchEnd.
func (s *Server) dispatch(ctx context.Context, cs *connState, e *streamEntry, st Stream, m wire.Message) (wire.Message, error) {
	binding := cs.binding
	switch m := m.(type) {
	case *wire.Health:
		if s.Draining() {
			return &wire.HealthStatus{Status: wire.StatusDraining}, nil
		}
		return &wire.HealthStatus{Status: wire.StatusServing}, nil
	case *wire.CreateMailbox:
		return s.createMailbox(ctx, binding, m)
	case *wire.TokenKeys:
		return s.tokenKeys()
	case *wire.IssueTokens:
		return s.issueTokens(ctx, m)
	case *wire.TokenQuota:
		return s.tokenQuota(ctx, m)
	case *wire.Send:
		return s.send(ctx, cs, m)
	case *wire.Fetch:
		return s.fetch(ctx, cs, e, st, m)
	case *wire.UploadKeyPackages:
		return s.uploadKeyPackages(ctx, m)
	case *wire.FetchKeyPackage:
		return s.fetchKeyPackage(ctx, m)
	case *wire.Ack:
		if _, err := s.authorizeOwner(ctx, binding, m); err != nil {
			return nil, err
		}
		n, err := s.opts.Store.Ack(ctx, m.ReceiveID, toStoreIDs(m.MessageIDs))
		if err != nil {
			return nil, storeError(err)
		}
		if s.opts.Observer != nil {
			r := reqOf(ctx)
			r.write()
			s.observe(obsEvent{conn: r.e.conn, ev: obsAck, mailbox: &m.ReceiveID, n: n})
		}
		return &wire.Acked{Deleted: uint16(n)}, nil
	case *wire.DeleteMailbox:
		if _, err := s.authorizeOwner(ctx, binding, m); err != nil {
			return nil, err
		}
		if err := s.opts.Store.DeleteMailbox(ctx, m.ReceiveID); err != nil {
			return nil, storeError(err)
		}
		s.hub.closeMailbox(m.ReceiveID)
		return &wire.Done{}, nil
	}
	return nil, wire.Errorf(wire.CodeUnknownKind, "record kind 0x%02x", uint8(m.Kind()))
}

func (s *Server) createMailbox(ctx context.Context, binding []byte, m *wire.CreateMailbox) (wire.Message, error) {
	if !wire.Verify(m, ed25519.PublicKey(m.OwnerKey[:]), binding) {
		return nil, wire.Errorf(wire.CodeUnauthorized, "owner signature does not verify")
	}
	spend, err := s.opts.Authorizer.AuthorizeCreate(ctx, m.Auth)
	if err != nil {
		s.countTokenRejection(err)
		return nil, authError(err)
	}
	// A collision of two random 256-bit IDs does not happen; a retry keeps
	// the code honest about ErrExists anyway.
	for range 3 {
		mb := store.Mailbox{OwnerKey: m.OwnerKey, Created: s.opts.Now()}
		rand.Read(mb.ReceiveID[:])
		rand.Read(mb.SendID[:])
		err := s.opts.Store.CreateMailbox(ctx, mb, spend)
		if errors.Is(err, store.ErrExists) {
			continue
		}
		if err != nil {
			s.countTokenRejection(storeError(err))
			return nil, storeError(err)
		}
		if spend != nil {
			s.opts.Metrics.TokenRedeemed()
		}
		s.noteMailbox(ctx, mb.ReceiveID, &mb.SendID)
		return &wire.MailboxCreated{ReceiveID: mb.ReceiveID, SendID: mb.SendID}, nil
	}
	return nil, wire.Errorf(wire.CodeExists, "mailbox ID collision")
}

func (s *Server) send(ctx context.Context, cs *connState, m *wire.Send) (wire.Message, error) {
	if len(m.Envelope) > int(s.limits.MaxEnvelope) {
		return nil, wire.Errorf(wire.CodeTooLarge, "envelope of %d bytes exceeds %d", len(m.Envelope), s.limits.MaxEnvelope)
	}
	// An empty auth is paid from the connection's allowance when it has
	// one (allowance.go); otherwise the authorizer judges it as ever.
	credited := len(m.Auth) == 0 && cs.allowance.take(s.opts.Now())
	var spend *store.Spend
	if !credited {
		var err error
		if spend, err = s.opts.Authorizer.AuthorizeSend(ctx, m.Auth); err != nil {
			s.countTokenRejection(err)
			return nil, authError(err)
		}
	}
	res, err := s.opts.Store.Put(ctx, m.SendID, m.MessageID, m.Envelope, s.opts.Quota, s.opts.Now(), spend)
	if err != nil || (credited && res.Duplicate) {
		// Nothing was stored: the allowance pays for stored messages
		// only, as a token does.
		if credited {
			cs.allowance.refund()
		}
	}
	if err != nil {
		s.countTokenRejection(storeError(err))
		return nil, storeError(err)
	}
	s.noteMailbox(ctx, res.ReceiveID, nil)
	if !res.Duplicate {
		if spend != nil {
			// Granted before Sent is written, so a client that counts
			// from the answer never counts more than the server holds.
			cs.allowance.grant(wire.SendsPerToken-1, spend.Until)
		}
		s.hub.notify(res.ReceiveID)
		if spend != nil {
			s.opts.Metrics.TokenRedeemed()
		}
	}
	return &wire.Sent{MessageID: m.MessageID, Duplicate: res.Duplicate}, nil
}

// authorizeOwner loads the mailbox a signed request names and checks the
// owner signature against this connection's binding.
func (s *Server) authorizeOwner(ctx context.Context, binding []byte, m wire.Signed) (store.Mailbox, error) {
	mb, err := s.opts.Store.Mailbox(ctx, m.Mailbox())
	if err != nil {
		return mb, storeError(err)
	}
	if !wire.Verify(m, ed25519.PublicKey(mb.OwnerKey[:]), binding) {
		return mb, wire.Errorf(wire.CodeUnauthorized, "owner signature does not verify")
	}
	return mb, nil
}

func (s *Server) fetch(ctx context.Context, cs *connState, e *streamEntry, st Stream, m *wire.Fetch) (wire.Message, error) {
	if _, err := s.authorizeOwner(ctx, cs.binding, m); err != nil {
		return nil, err
	}
	limit := min(int(m.Limit), int(s.limits.MaxFetch))
	if s.opts.Observer != nil {
		reqOf(ctx).write() // the request goes before its deliveries
	}
	_, more, err := s.deliverFrom(ctx, cs, e, st, m.ReceiveID, m.After, limit)
	if err != nil {
		return nil, err
	}
	return &wire.FetchEnd{More: more}, nil
}

// subscribe streams the backlog after the cursor, a FetchEnd marker, then
// every new message, until the client closes the stream, the mailbox is
// deleted, a newer subscription replaces this one, the connection ends,
// or the server drains.
func (s *Server) subscribe(conn *quic.Conn, cs *connState, e *streamEntry, st Stream, m *wire.Subscribe, or *obsReq) {
	fail := func(err error) {
		s.countError(metrics.KindLabel(wire.KindSubscribe), err)
		or.fail(err)
		st.SetWriteDeadline(time.Now().Add(s.opts.RequestTimeout))
		s.writeError(st, s.opts.Policy, err)
		st.CancelRead(0)
	}
	ctx, cancel := context.WithTimeout(st.Context(), s.opts.RequestTimeout)
	_, err := s.authorizeOwner(ctx, cs.binding, m)
	cancel()
	if err != nil {
		fail(err)
		return
	}
	if cs.subs.Add(1) > int32(s.opts.MaxSubsPerConn) {
		cs.subs.Add(-1)
		s.opts.Metrics.Refused(metrics.LimitSubscriptions)
		fail(wire.Errorf(wire.CodeRateLimited, "too many subscriptions on this connection (%d)", s.opts.MaxSubsPerConn))
		return
	}
	defer cs.subs.Add(-1)
	st.SetReadDeadline(time.Time{})
	// Register before reading the backlog so no store can slip between.
	sub, stop := s.hub.subscribe(m.ReceiveID)
	defer stop()
	if or != nil {
		or.write()
		s.observe(obsEvent{conn: cs.obsID, ev: obsSubscribe, mailbox: &m.ReceiveID})
	}
	// failLate answers a subscription that was running with an Error.
	failLate := func(err error) {
		if or != nil {
			s.observe(obsEvent{conn: cs.obsID, ev: obsError, kind: or.e.kind, code: obsCode(err)})
		}
		st.SetWriteDeadline(time.Now().Add(s.opts.RequestTimeout))
		s.writeError(st, s.opts.Policy, err)
	}
	// The client ends a subscription by closing its side; a read that
	// returns tells us so. Anything it sends meanwhile is dropped through
	// a small buffer.
	clientGone := make(chan struct{})
	go func() {
		var b [64]byte
		for {
			if _, err := st.Read(b[:]); err != nil {
				break
			}
		}
		close(clientGone)
	}()
	defer st.CancelRead(0) // ends that reader, whoever ends the subscription
	cursor, marked := m.After, false
	for {
		var more bool
		var err error
		for more = true; more; {
			cursor, more, err = s.deliverFrom(st.Context(), cs, e, st, m.ReceiveID, cursor, math.MaxInt)
			if err != nil {
				if _, coded := wire.CodeOf(err); coded {
					failLate(err)
				}
				return
			}
		}
		if !marked {
			st.SetWriteDeadline(time.Now().Add(s.opts.RequestTimeout))
			if wire.WriteMessage(st, s.opts.Policy, &wire.FetchEnd{}) != nil {
				return
			}
			marked = true
		}
		select {
		case <-sub.wake:
		case <-sub.gone:
			// The stream may have idled past its last deadline: give the
			// closing record a fresh one, or it is lost (failLate does).
			failLate(wire.Errorf(wire.CodeNotFound, "mailbox deleted"))
			return
		case <-sub.replaced:
			s.opts.Metrics.Refused(metrics.LimitSubscriptions)
			failLate(wire.Errorf(wire.CodeRateLimited, "a newer subscription to this mailbox replaced this one"))
			return
		case <-clientGone:
			return
		case <-conn.Context().Done():
			return
		case <-s.subsCtx.Done():
			failLate(wire.Errorf(wire.CodeUnavailable, "server shutting down"))
			return
		}
	}
}

func (s *Server) purgeLoop() {
	defer close(s.purgeDone)
	t := time.NewTicker(s.opts.PurgeInterval)
	defer t.Stop()
	for {
		select {
		case <-s.purgeStop:
			return
		case <-t.C:
			n, err := s.opts.Store.PurgeExpired(context.Background(), s.opts.Now(), s.opts.TTL)
			if err != nil {
				s.log.Warn("expiry sweep failed", "err", err)
			} else if n > 0 {
				s.log.Info("expired messages purged", "count", n)
			}
			s.purgeIdle()
			if s.opts.Accounts != nil {
				if _, err := s.opts.Accounts.PurgeExpired(context.Background()); err != nil {
					s.log.Warn("account expiry sweep failed", "err", err)
				}
			}
		}
	}
}

// purgeIdle deletes the mailboxes whose owner has not fetched from them
// for MailboxTTL (docs/storage.md, "Idle mailboxes"). A mailbox with a
// live subscription is in use however long nothing arrives: it is kept.
// A subscription that starts while its mailbox is deleted ends with
// NOT_FOUND, as after DeleteMailbox.
func (s *Server) purgeIdle() {
	n, err := s.opts.Store.PurgeIdle(context.Background(), s.opts.Now(), s.opts.MailboxTTL, s.hub.subscribed, s.hub.closeMailbox)
	if err != nil {
		s.log.Warn("idle mailbox sweep failed", "err", err)
	} else if n > 0 {
		s.log.Info("idle mailboxes deleted", "count", n)
	}
}

func toStoreIDs(ids []wire.MessageID) [][store.MessageIDSize]byte {
	out := make([][store.MessageIDSize]byte, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}

// storeError maps store errors to protocol codes (docs/protocol.md §6).
func storeError(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return wire.Errorf(wire.CodeNotFound, "no such mailbox")
	case errors.Is(err, store.ErrQuotaCount):
		return wire.Errorf(wire.CodeQuota, "mailbox holds too many messages")
	case errors.Is(err, store.ErrQuotaBytes):
		return wire.Errorf(wire.CodeQuota, "mailbox holds too many bytes")
	case errors.Is(err, store.ErrTooLarge):
		return wire.Errorf(wire.CodeTooLarge, "envelope too large")
	case errors.Is(err, store.ErrExists):
		return wire.Errorf(wire.CodeExists, "mailbox exists")
	case errors.Is(err, store.ErrSpent):
		return wire.Errorf(wire.CodeTokenSpent, "token already spent")
	case errors.Is(err, store.ErrClosed), errors.Is(err, store.ErrStorageFailed),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return fmt.Errorf("%w: %w", wire.Errorf(wire.CodeUnavailable, "storage unavailable, retry later"), err)
	}
	return err
}

func authError(err error) error {
	if _, ok := wire.CodeOf(err); ok {
		return err
	}
	return fmt.Errorf("%w: %w", wire.Errorf(wire.CodeForbidden, "not authorized"), err)
}
