package protocol

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/wire"
)

// Errors of this package; protocol refusals are *wire.Error.
var (
	ErrClosed    = errors.New("client: connection closed")
	ErrPin       = errors.New("client: server key does not match the pinned address")
	ErrNotBucket = errors.New("client: record is not a bucket size")
	// ErrPolicy: the server announced a padding policy other than the
	// pinned one (Options.Policy). A server that picks its buckets per
	// client, or buckets fine enough to tell sizes apart, would undo the
	// padding; the connection is refused.
	ErrPolicy = errors.New("client: the server's padding policy is not the pinned one")
)

// Options configure Dial. Zero values take defaults.
type Options struct {
	HandshakeTimeout time.Duration // QUIC handshake + hello; default 10 s
	IdleTimeout      time.Duration // default 60 s
	RequestTimeout   time.Duration // one attempt of one request; default 30 s

	MaxAttempts int           // per idempotent request; default 6
	BaseBackoff time.Duration // first retry delay; default 100 ms
	MaxBackoff  time.Duration // default 5 s

	// PacketConn, if set, carries QUIC instead of a fresh UDP socket
	// (for example a tunnel through Tor); RemoteAddr is then the peer's
	// address on it. The connection owns neither.
	PacketConn net.PacketConn
	RemoteAddr net.Addr

	// Tor routes the connection through Tor (tor.go). Onion
	// addresses go through Tor whatever is set here; by default through
	// the system tor's SOCKS port, one circuit per Conn.
	Tor *TorOptions

	// Tap, if set, sees every byte written to and read from request
	// streams, per stream: for tests that check what goes on the wire.
	Tap func(stream int64, outgoing bool, b []byte)

	Logger *slog.Logger

	// Policy is the padding policy pinned for the server: a ServerHello
	// that announces any other is refused with ErrPolicy
	// (docs/protocol.md §3.1). The zero Policy pins padding.Default; a
	// server whose operator set other buckets must give its users the
	// policy with its address (`qpc init --buckets`).
	Policy padding.Policy

	// Answered, if set, is called whenever the server answers anything
	// on this connection (a hello, a response, an error record): the
	// messenger shares one record of it among all its connections to its
	// server, to tell "the server withholds this answer" from "nothing
	// reaches the server".
	Answered func()
}

// answered calls Options.Answered, if set.
func (c *Conn) answered() {
	if c.opts.Answered != nil {
		c.opts.Answered()
	}
}

func (o *Options) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.HandshakeTimeout, 10*time.Second)
	def(&o.IdleTimeout, 60*time.Second)
	def(&o.RequestTimeout, 30*time.Second)
	def(&o.BaseBackoff, 100*time.Millisecond)
	def(&o.MaxBackoff, 5*time.Second)
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 6
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Policy.IsZero() {
		o.Policy = padding.Default
	}
	o.setTorDefaults()
}

// Conn is a connection to one server, redialled as needed. It is safe for
// concurrent use; each request runs on its own QUIC stream.
//
// A server of several nodes has an address of several endpoints
// (docs/protocol.md §1.1). Conn dials them in an order drawn at random
// when it is made, and when a connection fails or dies the next dial
// starts at the endpoint after the one that failed: a node killed
// mid-session costs the requests in flight one retry, which the
// idempotent ones make by themselves (do), and the subscriptions one
// resubscription from their cursor (Subscription.run).
type Conn struct {
	// pin is the key every endpoint must present.
	pin [wire.PinSize]byte
	// addr is the endpoint of the current (or last) connection; guarded
	// by mu.
	addr wire.Address
	opts Options
	// eps are the address's endpoints in the order drawn at Dial; cur is
	// the index of addr in it; next where the next dial starts.
	eps       []wire.Address
	cur, next int
	// onion: some endpoint is an onion service, so every endpoint is
	// dialled through Tor (viaTor).
	onion bool

	mu     sync.Mutex
	sess   *session // current connection; nil after a failure
	closed bool
	owned  *quic.Transport // transport we created, closed by Close
}

// session is one QUIC connection after a successful hello.
type session struct {
	qc      *quic.Conn
	binding []byte
	hello   wire.ServerHello
	// allowance counts the Sends this connection may still make with an
	// empty auth, paid for by a token it spent (SendPaid).
	allowance allowance
}

// Dial connects to addr (a qpc:// address) and runs the version handshake.
func Dial(ctx context.Context, addr string, opts Options) (*Conn, error) {
	a, err := wire.ParseAddress(addr)
	if err != nil {
		return nil, err
	}
	opts.setDefaults()
	c := &Conn{pin: a.Pin, addr: a.Endpoints()[0], opts: opts, eps: a.Endpoints(), onion: a.AnyOnion()}
	// A random order, not the written one: with the written one every
	// client would land on the first node, which would carry the whole
	// load until it failed and would see every client's connections
	// (when and from where each connects); drawn per Conn, both spread.
	mrand.Shuffle(len(c.eps), func(i, j int) { c.eps[i], c.eps[j] = c.eps[j], c.eps[i] })
	if _, err := c.session(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// LocalAddr is the local address of the current connection, or nil.
func (c *Conn) LocalAddr() net.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess == nil {
		return nil
	}
	return c.sess.qc.LocalAddr()
}

// Endpoint is the host:port of the endpoint the current (or last)
// connection went to: one of the address's endpoints.
func (c *Conn) Endpoint() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.addr.Host
}

// Policy is the padding policy the server announced.
func (c *Conn) Policy() padding.Policy { return c.hello().Policy }

// Limits are the limits the server announced.
func (c *Conn) Limits() wire.Limits { return c.hello().Limits }

func (c *Conn) hello() wire.ServerHello {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess == nil {
		return wire.ServerHello{}
	}
	return c.sess.hello
}

// Close ends the connection. Requests in flight fail with ErrClosed.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if c.sess != nil {
		c.sess.qc.CloseWithError(0, "")
		c.sess = nil
	}
	if c.owned != nil {
		c.owned.Close()
		c.owned.Conn.Close()
	}
	return nil
}

func (c *Conn) tlsConfig() *tls.Config {
	pin := c.pin
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Every version this build speaks, newest first; the server picks
		// the highest it also speaks (docs/compatibility.md).
		NextProtos:       wire.ALPNs(wire.SupportedVersions()),
		CurvePreferences: []tls.CurveID{tls.X25519MLKEM768},
		ServerName:       "quicprochat",
		// The server is authenticated by its pinned key, not by a CA:
		// chain verification is replaced by the SPKI comparison below.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return ErrPin
			}
			cert, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return fmt.Errorf("%w: %v", ErrPin, err)
			}
			got := wire.PinSPKI(cert.RawSubjectPublicKeyInfo)
			if subtle.ConstantTimeCompare(got[:], pin[:]) != 1 {
				return ErrPin
			}
			return nil
		},
	}
}

// session returns the live session, dialling a new one if needed.
func (c *Conn) session(ctx context.Context) (*session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if c.sess != nil && c.sess.qc.Context().Err() == nil {
		return c.sess, nil
	}
	if c.sess != nil {
		// The connection died under us (idle timeout, the node gone):
		// start with another node.
		c.next = c.cur + 1
	}
	c.sess = nil
	s, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	c.sess = s
	return s, nil
}

// dropSession forgets s after a transport failure so the next request
// redials.
//
// The connection itself is closed only after a grace period: other
// requests and subscriptions may be in flight on it, and one request's
// timeout is no proof that they are stuck too. A connection that really
// died ends them sooner anyway.
func (c *Conn) dropSession(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess == s {
		c.sess = nil
		c.next = c.cur + 1 // this node failed us: try another first
		qc := s.qc
		time.AfterFunc(c.opts.RequestTimeout, func() { qc.CloseWithError(0, "") })
	}
}

// dial connects to the first endpoint that answers, starting at c.next.
// Called with c.mu held. With one endpoint its error is returned as it
// is; with several, all of theirs joined.
//
// The endpoints are tried in turn, each after the last failed or, if it
// has not answered within staggerDelay, beside it (RFC 8305 §5 does the
// same for addresses of one name): a node that died without a word
// would otherwise hold every new connection for a whole handshake
// timeout. The first to complete its hello wins; the others are
// cancelled, or closed if they completed too. All the nodes are one
// operator's, so a second dial tells no one new of the client.
func (c *Conn) dial(ctx context.Context) (*session, error) {
	if c.opts.PacketConn != nil || len(c.eps) <= 1 {
		return c.dialOne(ctx, c.addr) // a tunnel names its own peer
	}
	if !c.viaTor() {
		if err := c.ownTransport(); err != nil {
			return nil, err
		}
	}
	type result struct {
		i   int
		s   *session
		err error
	}
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan result, len(c.eps))
	launched, pending := 0, 0
	launch := func() {
		i := (c.next + launched) % len(c.eps)
		launched++
		pending++
		go func() {
			s, err := c.dialOne(dctx, c.eps[i])
			results <- result{i, s, err}
		}()
	}
	stagger := time.NewTimer(c.staggerDelay())
	defer stagger.Stop()
	launch()
	var errs []error
	for pending > 0 {
		select {
		case r := <-results:
			pending--
			if r.err == nil {
				cancel()
				// Late winners are closed as they come in.
				go func(n int) {
					for range n {
						if late := <-results; late.s != nil {
							late.s.qc.CloseWithError(0, "")
						}
					}
				}(pending)
				c.addr, c.cur, c.next = c.eps[r.i], r.i, r.i
				return r.s, nil
			}
			host := c.eps[r.i].Host
			if errors.Is(r.err, ErrPin) {
				// A node of this server with another key: misconfigured,
				// or not the server's at all. Said loudly even when
				// another node answers.
				c.opts.Logger.Warn("endpoint presented a key other than the pinned one", "endpoint", host)
			} else {
				c.opts.Logger.Debug("endpoint failed", "endpoint", host, "err", r.err)
			}
			errs = append(errs, fmt.Errorf("%s: %w", host, r.err))
			if launched < len(c.eps) && ctx.Err() == nil {
				launch()
				stagger.Reset(c.staggerDelay())
			}
		case <-stagger.C:
			if launched < len(c.eps) {
				launch()
				stagger.Reset(c.staggerDelay())
			}
		}
	}
	c.next = (c.next + 1) % len(c.eps)
	return nil, fmt.Errorf("every endpoint failed: %w", errors.Join(errs...))
}

// staggerDelay is how long dial waits for an endpoint before trying the
// next beside it: a second on UDP, where a live node answers in a round
// trip or two; ten through Tor, where building the circuit alone takes
// seconds.
func (c *Conn) staggerDelay() time.Duration {
	if c.viaTor() {
		return min(10*time.Second, c.opts.Tor.ConnectTimeout)
	}
	return min(time.Second, c.opts.HandshakeTimeout)
}

// ownTransport makes the UDP transport the Conn's direct dials share.
// Called with c.mu held.
func (c *Conn) ownTransport() error {
	if c.owned != nil {
		return nil
	}
	udp, err := net.ListenUDP("udp", nil)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	c.owned = &quic.Transport{Conn: udp}
	return nil
}

// dialOne connects to the endpoint ep and runs the hello. It may run
// beside other dialOne calls of the same Conn (dial).
func (c *Conn) dialOne(ctx context.Context, ep wire.Address) (*session, error) {
	timeout := c.opts.HandshakeTimeout
	if c.viaTor() {
		timeout = max(timeout, c.opts.Tor.ConnectTimeout)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	qconf := &quic.Config{
		HandshakeIdleTimeout: c.opts.HandshakeTimeout,
		MaxIdleTimeout:       c.opts.IdleTimeout,
		KeepAlivePeriod:      c.opts.IdleTimeout / 3,
	}
	var qc *quic.Conn
	var err error
	if c.opts.PacketConn != nil {
		// A tunnel (tor/tunnel) fits the QUIC configuration itself, as
		// it does for dialTor and on the server.
		if t, ok := c.opts.PacketConn.(interface {
			QUICConfig(*quic.Config) *quic.Config
		}); ok {
			qconf = t.QUICConfig(qconf)
		}
		tr := &quic.Transport{Conn: c.opts.PacketConn}
		qc, err = tr.Dial(ctx, c.opts.RemoteAddr, c.tlsConfig(), qconf)
	} else if c.viaTor() {
		qc, err = c.dialTor(ctx, ep.Host, qconf)
	} else {
		if err := c.ownTransport(); err != nil {
			return nil, err
		}
		var raddr *net.UDPAddr
		raddr, err = net.ResolveUDPAddr("udp", ep.Host)
		if err != nil {
			return nil, fmt.Errorf("dial: %w", err)
		}
		qc, err = c.owned.Dial(ctx, raddr, c.tlsConfig(), qconf)
	}
	if err != nil {
		if errors.Is(err, ErrPin) {
			return nil, ErrPin
		}
		return nil, fmt.Errorf("dial: %w", err)
	}
	cs := qc.ConnectionState().TLS
	binding, err := cs.ExportKeyingMaterial(wire.ExporterLabel, nil, wire.BindingSize)
	if err != nil {
		qc.CloseWithError(1, "")
		return nil, fmt.Errorf("dial: %w", err)
	}
	s := &session{qc: qc, binding: binding}
	if err := c.runHello(ctx, s); err != nil {
		qc.CloseWithError(1, "")
		return nil, err
	}
	c.answered()
	return s, nil
}

// runHello sends ClientHello on the first stream and reads ServerHello
// (docs/protocol.md §4.1); both are exactly one control bucket.
func (c *Conn) runHello(ctx context.Context, s *session) error {
	st, err := s.qc.OpenStreamSync(ctx)
	if err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	defer st.Close()
	if dl, ok := ctx.Deadline(); ok {
		st.SetDeadline(dl)
	}
	rw := c.tap(st)
	if err := c.write(rw, padding.Control, &wire.ClientHello{Versions: wire.SupportedVersions()}); err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	m, err := wire.NewReader(rw, padding.Control).ReadMessage()
	if err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	switch m := m.(type) {
	case *wire.ServerHello:
		// The hello must choose what TLS chose: the ALPN is authenticated
		// by the handshake, so a mismatch means a broken or meddling peer.
		alpn, _ := wire.ParseALPN(s.qc.ConnectionState().TLS.NegotiatedProtocol)
		if !slices.Contains(wire.SupportedVersions(), m.Version) || m.Version != alpn {
			return wire.Errorf(wire.CodeVersion, "server chose version %d (TLS: %d)", m.Version, alpn)
		}
		// The policy is pinned, not taken from the server: one chosen
		// for this client alone, or with buckets fine enough to tell
		// lengths apart, would undo the padding.
		if !m.Policy.Equal(c.opts.Policy) {
			if c.opts.Policy.Equal(padding.V1) && m.Policy.Equal(padding.V2) {
				// The one change a release made to the default: say how to
				// follow it, never follow it unasked (docs/adr/0018-buckets.md).
				return fmt.Errorf("%w: the server announced buckets %s (the default since padding policy V2), pinned %s (V1): if its operator moved to V2, pin it with `qpc buckets default`", ErrPolicy, m.Policy, c.opts.Policy)
			}
			return fmt.Errorf("%w: the server announced buckets %s, pinned %s", ErrPolicy, m.Policy, c.opts.Policy)
		}
		// So is the largest envelope, which sets where messages are cut
		// into chunks: a smaller limit for one client would make the
		// number of chunks tell its texts' lengths.
		if want := wire.MaxEnvelope(c.opts.Policy); int(m.Limits.MaxEnvelope) < want {
			return fmt.Errorf("%w: the server announced max_envelope %d, the pinned buckets %s give %d", ErrPolicy, m.Limits.MaxEnvelope, c.opts.Policy, want)
		}
		s.hello = *m
		return nil
	case *wire.ErrorMessage:
		return m.Err()
	}
	return wire.Errorf(wire.CodeProtocol, "unexpected %T in handshake", m)
}

// write refuses any record that is not exactly one bucket of p.
func (c *Conn) write(w io.Writer, p padding.Policy, m wire.Message) error {
	rec, err := wire.AppendMessage(nil, p, m)
	if err != nil {
		return err
	}
	if !p.IsBucket(len(rec)) {
		return ErrNotBucket
	}
	_, err = w.Write(rec)
	return err
}

type tapped struct {
	st  *quic.Stream
	tap func(int64, bool, []byte)
}

func (t tapped) Read(b []byte) (int, error) {
	n, err := t.st.Read(b)
	if n > 0 {
		t.tap(int64(t.st.StreamID()), false, b[:n])
	}
	return n, err
}

func (t tapped) Write(b []byte) (int, error) {
	n, err := t.st.Write(b)
	if n > 0 {
		t.tap(int64(t.st.StreamID()), true, b[:n])
	}
	return n, err
}

func (c *Conn) tap(st *quic.Stream) io.ReadWriter {
	if c.opts.Tap == nil {
		return st
	}
	return tapped{st: st, tap: c.opts.Tap}
}

// retryable reports whether err is worth another attempt.
func retryable(err error) bool {
	if code, ok := wire.CodeOf(err); ok {
		return code.Retryable()
	}
	if errors.Is(err, ErrClosed) || errors.Is(err, ErrPin) || errors.Is(err, ErrPolicy) ||
		errors.Is(err, context.Canceled) || errors.Is(err, wire.ErrBadAddress) {
		return false
	}
	// Transport failures: timeouts, resets, closed connections.
	return true
}

// backoff is full-jitter exponential backoff for attempt n (from 1).
func (c *Conn) backoff(n int) time.Duration {
	d := c.opts.BaseBackoff << min(n-1, 16)
	if d > c.opts.MaxBackoff || d <= 0 {
		d = c.opts.MaxBackoff
	}
	return time.Duration(mrand.Int64N(int64(d)) + 1)
}

// do runs attempt up to MaxAttempts times (once if !idempotent), redialling
// between attempts after transport failures.
func (c *Conn) do(ctx context.Context, idempotent bool, attempt func(ctx context.Context, s *session) error) error {
	attempts := 1
	if idempotent {
		attempts = c.opts.MaxAttempts
	}
	var err error
	for n := 1; ; n++ {
		var s *session
		s, err = c.session(ctx)
		if err == nil {
			actx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
			err = attempt(actx, s)
			cancel()
			if _, coded := wire.CodeOf(err); err == nil || coded {
				c.answered() // an answer or an error record came
			} else {
				c.dropSession(s)
			}
		}
		if err == nil || !retryable(err) || n >= attempts || ctx.Err() != nil {
			return err
		}
		c.opts.Logger.Debug("retrying request", "attempt", n, "err", err)
		t := time.NewTimer(c.backoff(n))
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// roundTrip sends one request on a new stream and returns the reader for
// its response records.
func (c *Conn) roundTrip(ctx context.Context, s *session, req wire.Message) (*quic.Stream, *wire.Reader, error) {
	st, err := s.qc.OpenStreamSync(ctx)
	if err != nil {
		return nil, nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		st.SetDeadline(dl)
	}
	rw := c.tap(st)
	if err := c.write(rw, s.hello.Policy, req); err != nil {
		st.CancelRead(0)
		st.CancelWrite(0)
		return nil, nil, err
	}
	// One request per stream: closing our side tells the server so.
	// Subscriptions and account exchanges keep it open.
	switch req.(type) {
	case *wire.Subscribe, *wire.AccountRequest:
	default:
		st.Close()
	}
	return st, wire.NewReader(rw, s.hello.Policy), nil
}

// call is roundTrip for requests with a single response record.
func (c *Conn) call(ctx context.Context, s *session, req wire.Message) (wire.Message, error) {
	st, r, err := c.roundTrip(ctx, s, req)
	if err != nil {
		return nil, err
	}
	defer st.CancelRead(0)
	m, err := r.ReadMessage()
	if err != nil {
		return nil, err
	}
	if e, ok := m.(*wire.ErrorMessage); ok {
		return nil, e.Err()
	}
	return m, nil
}

func unexpected(m wire.Message) error {
	return wire.Errorf(wire.CodeProtocol, "unexpected response %T", m)
}

// Mailbox is the receive side of a mailbox: its IDs and owner key. Keep it
// secret; give others only SendID.
type Mailbox struct {
	ReceiveID wire.ID
	SendID    wire.ID
	Key       ed25519.PrivateKey
}

// NewMessageID returns a random message ID for Send.
func NewMessageID() wire.MessageID {
	var id wire.MessageID
	rand.Read(id[:])
	return id
}

// CreateMailbox creates a mailbox with a fresh owner key. auth is the
// server's authorization input (nil until tokens are required).
func (c *Conn) CreateMailbox(ctx context.Context, auth []byte) (*Mailbox, error) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	var mb *Mailbox
	err = c.do(ctx, false, func(ctx context.Context, s *session) error {
		req := &wire.CreateMailbox{Auth: auth}
		copy(req.OwnerKey[:], pub)
		if err := wire.Sign(req, key, s.binding); err != nil {
			return err
		}
		m, err := c.call(ctx, s, req)
		if err != nil {
			return err
		}
		r, ok := m.(*wire.MailboxCreated)
		if !ok {
			return unexpected(m)
		}
		mb = &Mailbox{ReceiveID: r.ReceiveID, SendID: r.SendID, Key: key}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("create mailbox: %w", err)
	}
	return mb, nil
}

// Send stores envelope in the mailbox whose send ID is to. A retry with
// the same id is stored once; duplicate reports that the server had it.
func (c *Conn) Send(ctx context.Context, to wire.ID, id wire.MessageID, envelope, auth []byte) (duplicate bool, err error) {
	if max := c.Limits().MaxEnvelope; max > 0 && len(envelope) > int(max) {
		return false, fmt.Errorf("send: %w", wire.Errorf(wire.CodeTooLarge, "envelope of %d bytes exceeds %d", len(envelope), max))
	}
	err = c.do(ctx, true, func(ctx context.Context, s *session) error {
		m, err := c.call(ctx, s, &wire.Send{SendID: to, MessageID: id, Auth: auth, Envelope: envelope})
		if err != nil {
			return err
		}
		r, ok := m.(*wire.Sent)
		if !ok || r.MessageID != id {
			return unexpected(m)
		}
		duplicate = r.Duplicate
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("send: %w", err)
	}
	return duplicate, nil
}

// SendPaid is Send for a caller holding a delivery token tok. A token pays
// for wire.SendsPerToken Sends on the connection that spends it
// (docs/protocol.md §4.3, "Send allowance"): while this connection has
// Sends left from a token it spent, SendPaid sends with an empty auth and
// reports spent false, so the caller keeps tok for a later Send; otherwise
// it spends tok. spent is true whenever tok was shown to the server, even
// by an attempt whose answer was lost: such a token must not be used
// again. (A duplicate answer spends nothing on the server, but an earlier
// attempt may have spent the token, so spent stays true.) A server that does not honour the allowance (TOKEN_MISSING for
// an empty auth) gets tok in the same call.
func (c *Conn) SendPaid(ctx context.Context, to wire.ID, id wire.MessageID, envelope, tok []byte) (duplicate, spent bool, err error) {
	if max := c.Limits().MaxEnvelope; max > 0 && len(envelope) > int(max) {
		return false, false, fmt.Errorf("send: %w", wire.Errorf(wire.CodeTooLarge, "envelope of %d bytes exceeds %d", len(envelope), max))
	}
	err = c.do(ctx, true, func(ctx context.Context, s *session) error {
		send := func(auth []byte) (*wire.Sent, error) {
			m, err := c.call(ctx, s, &wire.Send{SendID: to, MessageID: id, Auth: auth, Envelope: envelope})
			if err != nil {
				return nil, err
			}
			r, ok := m.(*wire.Sent)
			if !ok || r.MessageID != id {
				return nil, unexpected(m)
			}
			return r, nil
		}
		if s.allowance.take() {
			r, err := send(nil)
			if err == nil {
				if r.Duplicate {
					s.allowance.refund() // nothing stored, nothing paid
				}
				duplicate = r.Duplicate
				return nil
			}
			if code, _ := wire.CodeOf(err); code != wire.CodeTokenMissing {
				// The server gives back what a failed Send took; an
				// answer lost with the connection loses the allowance
				// with it.
				s.allowance.refund()
				return err
			}
			// The server holds less than we counted (an answer we gave
			// up on was counted there, not here): pay with the token.
			s.allowance.clear()
		}
		spent = true
		r, err := send(tok)
		if err != nil {
			return err
		}
		if !r.Duplicate {
			s.allowance.grant(wire.SendsPerToken - 1)
		}
		duplicate = r.Duplicate
		return nil
	})
	if err != nil {
		return false, spent, fmt.Errorf("send: %w", err)
	}
	return duplicate, spent, nil
}

// SendAllowed is SendPaid without a token: it sends envelope only if
// the connection has Sends left of a token it showed before (ADR 0017),
// and otherwise sends nothing and reports sent false, so that the caller
// pays with SendPaid. A messenger uses it to send before the token it
// would show is recorded (a token must never be shown before then, or a
// crash could show it twice, linking two Sends). When err is not nil the
// envelope may have reached the server.
func (c *Conn) SendAllowed(ctx context.Context, to wire.ID, id wire.MessageID, envelope []byte) (sent, duplicate bool, err error) {
	if max := c.Limits().MaxEnvelope; max > 0 && len(envelope) > int(max) {
		return false, false, fmt.Errorf("send: %w", wire.Errorf(wire.CodeTooLarge, "envelope of %d bytes exceeds %d", len(envelope), max))
	}
	// One attempt: a retry on a new session would have no allowance.
	err = c.do(ctx, false, func(ctx context.Context, s *session) error {
		if !s.allowance.take() {
			return nil
		}
		m, err := c.call(ctx, s, &wire.Send{SendID: to, MessageID: id, Envelope: envelope})
		if err != nil {
			if code, _ := wire.CodeOf(err); code == wire.CodeTokenMissing {
				s.allowance.clear() // the server holds less than we counted
				return nil
			}
			s.allowance.refund()
			return err
		}
		r, ok := m.(*wire.Sent)
		if !ok || r.MessageID != id {
			return unexpected(m)
		}
		if r.Duplicate {
			s.allowance.refund() // nothing stored, nothing paid
		}
		sent, duplicate = true, r.Duplicate
		return nil
	})
	if err != nil {
		return false, false, fmt.Errorf("send: %w", err)
	}
	return sent, duplicate, nil
}

// allowance is the client's count of a connection's Send allowance. It
// never exceeds the server's: the server grants before it answers, and
// this side grants only on the answer.
type allowance struct {
	mu   sync.Mutex
	left int
}

func (a *allowance) take() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.left == 0 {
		return false
	}
	a.left--
	return true
}

func (a *allowance) refund() { a.mu.Lock(); a.left++; a.mu.Unlock() }

func (a *allowance) clear() { a.mu.Lock(); a.left = 0; a.mu.Unlock() }

func (a *allowance) grant(n int) { a.mu.Lock(); a.left += n; a.mu.Unlock() }

// Message is one delivered envelope.
type Message struct {
	Seq        uint64
	ID         wire.MessageID
	ReceivedAt time.Time
	Envelope   []byte
}

func fromDelivery(d *wire.Delivery) Message {
	return Message{Seq: d.Seq, ID: d.MessageID, ReceivedAt: time.Unix(int64(d.ReceivedAt), 0), Envelope: d.Envelope}
}

// Fetch returns up to limit messages after the cursor, and whether more
// remain.
func (c *Conn) Fetch(ctx context.Context, mb *Mailbox, after uint64, limit int) (msgs []Message, more bool, err error) {
	limit = max(1, min(limit, wire.MaxFetchLimit))
	err = c.do(ctx, true, func(ctx context.Context, s *session) error {
		msgs = msgs[:0]
		req := &wire.Fetch{ReceiveID: mb.ReceiveID, After: after, Limit: uint16(limit)}
		if err := wire.Sign(req, mb.Key, s.binding); err != nil {
			return err
		}
		st, r, err := c.roundTrip(ctx, s, req)
		if err != nil {
			return err
		}
		defer st.CancelRead(0)
		for {
			m, err := r.ReadMessage()
			if err != nil {
				return err
			}
			switch m := m.(type) {
			case *wire.Delivery:
				// A server may not send more than asked: past the
				// limit it could make us hold without bound.
				if len(msgs) == limit {
					return wire.Errorf(wire.CodeProtocol, "server sent more than the %d deliveries asked for", limit)
				}
				msgs = append(msgs, fromDelivery(m))
			case *wire.FetchEnd:
				more = m.More
				return nil
			case *wire.ErrorMessage:
				return m.Err()
			default:
				return unexpected(m)
			}
		}
	})
	if err != nil {
		return nil, false, fmt.Errorf("fetch: %w", err)
	}
	return msgs, more, nil
}

// Ack deletes delivered messages; acking twice is harmless. It returns how
// many were deleted by this call.
func (c *Conn) Ack(ctx context.Context, mb *Mailbox, ids []wire.MessageID) (int, error) {
	total := 0
	for len(ids) > 0 {
		batch := ids[:min(len(ids), wire.MaxAckIDs)]
		ids = ids[len(batch):]
		err := c.do(ctx, true, func(ctx context.Context, s *session) error {
			req := &wire.Ack{ReceiveID: mb.ReceiveID, MessageIDs: batch}
			if err := wire.Sign(req, mb.Key, s.binding); err != nil {
				return err
			}
			m, err := c.call(ctx, s, req)
			if err != nil {
				return err
			}
			r, ok := m.(*wire.Acked)
			if !ok {
				return unexpected(m)
			}
			total += int(r.Deleted)
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("ack: %w", err)
		}
	}
	return total, nil
}

// DeleteMailbox removes the mailbox and everything in it.
func (c *Conn) DeleteMailbox(ctx context.Context, mb *Mailbox) error {
	attempts := 0
	err := c.do(ctx, true, func(ctx context.Context, s *session) error {
		attempts++
		req := &wire.DeleteMailbox{ReceiveID: mb.ReceiveID}
		if err := wire.Sign(req, mb.Key, s.binding); err != nil {
			return err
		}
		m, err := c.call(ctx, s, req)
		if attempts > 1 && errors.Is(err, &wire.Error{Code: wire.CodeNotFound}) {
			// An earlier attempt deleted it and its Done was lost: the
			// mailbox is gone, which is what was asked.
			return nil
		}
		if err != nil {
			return err
		}
		if _, ok := m.(*wire.Done); !ok {
			return unexpected(m)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete mailbox: %w", err)
	}
	return nil
}

// Health asks the server for its status (wire.StatusServing or
// wire.StatusDraining).
func (c *Conn) Health(ctx context.Context) (uint8, error) {
	var status uint8
	err := c.do(ctx, true, func(ctx context.Context, s *session) error {
		m, err := c.call(ctx, s, &wire.Health{})
		if err != nil {
			return err
		}
		r, ok := m.(*wire.HealthStatus)
		if !ok {
			return unexpected(m)
		}
		status = r.Status
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("health: %w", err)
	}
	return status, nil
}
