package tunnel

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"
)

// Limits and defaults.
const (
	// MaxDatagram is the default and the largest useful datagram: quic-go
	// never sends or reads a packet larger than this (its packet buffer).
	MaxDatagram = 1452
	// maxFrame is what the 2-byte prefix can describe.
	maxFrame = 1<<16 - 1

	// MinHandshakeTimeout is the QUICConfig floor for the handshake: a
	// QUIC handshake over Tor takes several circuit round trips, each of
	// which can take seconds on the public network.
	MinHandshakeTimeout = 30 * time.Second

	defaultMaxPeers    = 1024
	defaultQueueLen    = 256
	defaultIdleTimeout = 5 * time.Minute
	incomingQueue      = 1024
	defaultSmallHold   = 15 * time.Millisecond
	// smallDatagram is the largest datagram SmallHold waits on: a QUIC
	// packet of only ACK or PING frames is well below it, and every
	// record of the protocol (512 bytes and up) well above.
	smallDatagram = 64
)

// Errors.
var (
	// ErrTooLarge is returned by WriteTo for a datagram above the limit.
	// A peer that sends one has its stream closed.
	ErrTooLarge = errors.New("tunnel: datagram too large")
	// ErrStreamClosed ends a client PacketConn whose stream has ended;
	// the QUIC connection on it is over, so the caller dials again.
	ErrStreamClosed = errors.New("tunnel: stream closed")
)

// Options tune a PacketConn. Zero values take the defaults.
type Options struct {
	// MaxDatagram is the largest datagram written or accepted, at most
	// 65535; default MaxDatagram.
	MaxDatagram int
	// MaxPeers bounds the streams a server serves at once; a stream
	// accepted above it is closed at once. Default 1024.
	MaxPeers int
	// QueueLen is how many datagrams may wait to be written to one
	// stream. Above it datagrams are dropped, as a full UDP socket
	// buffer would drop them, so that one slow peer never stalls the
	// transport's writes to the others. Default 256.
	QueueLen int
	// IdleTimeout closes a server-side stream that has carried nothing
	// from its peer for this long, so vanished peers do not hold file
	// descriptors. Keep it above the QUIC idle timeout. Default 5 min.
	IdleTimeout time.Duration
	// DelayedACK keeps the kernel's delayed ACKs on the streams. By
	// default the tunnel acknowledges every read at once (TCP_QUICKACK
	// on Linux), because the peer that writes to it may be tor, which
	// does not disable Nagle's algorithm: with delayed ACKs, the second
	// piece of a datagram tor writes in two waits up to 40 ms for the
	// ACK of the first (docs/tor.md, "Performance"). For measurement.
	DelayedACK bool
	// SmallHold is how long a write of nothing but small datagrams
	// (at most 64 bytes: QUIC ACKs and PINGs) waits for another datagram
	// to share it. Through Tor, a small write followed by another within
	// tens of milliseconds waits for a relay's delayed ACK (docs/tor.md,
	// "Performance"); a QUIC ACK is usually followed by the answer it
	// precedes. Default 15 ms; negative: never wait.
	SmallHold time.Duration
}

func (o *Options) setDefaults() {
	if o.MaxDatagram <= 0 || o.MaxDatagram > maxFrame {
		o.MaxDatagram = MaxDatagram
	}
	if o.MaxPeers <= 0 {
		o.MaxPeers = defaultMaxPeers
	}
	if o.QueueLen <= 0 {
		o.QueueLen = defaultQueueLen
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = defaultIdleTimeout
	}
	if o.SmallHold == 0 {
		o.SmallHold = defaultSmallHold
	}
}

// Addr is the synthetic address of one stream. The server gives every
// accepted stream a new one, so QUIC sees each as its own peer.
type Addr struct {
	id    uint64
	label string
}

// Network is "tunnel".
func (a *Addr) Network() string { return "tunnel" }

func (a *Addr) String() string {
	if a.label != "" {
		return "tunnel:" + a.label
	}
	return "tunnel#" + strconv.FormatUint(a.id, 10)
}

type packet struct {
	buf  *[]byte // from bufPool; data is (*buf)[:n]
	n    int
	from *Addr
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 2+maxFrame); return &b }}

// getBuf returns a pooled buffer at its full length.
func getBuf() *[]byte {
	b := bufPool.Get().(*[]byte)
	*b = (*b)[:cap(*b)]
	return b
}

// PacketConn is a net.PacketConn over byte streams. Build it with Server
// or Client. It is safe for concurrent use.
type PacketConn struct {
	opts   Options
	ln     net.Listener // server only
	local  *Addr
	client *peer // client only

	in     chan packet
	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup

	rd deadline

	mu     sync.Mutex
	peers  map[uint64]*peer
	nextID atomic.Uint64
	// streamErr ends a client's reads once its queue is drained.
	streamErr chan struct{}
}

type peer struct {
	pc   *PacketConn
	addr *Addr
	conn net.Conn
	out  chan *[]byte // framed datagrams (prefix included), from bufPool
	done chan struct{}
	once sync.Once
}

// Server returns a PacketConn that accepts streams from ln and carries
// the datagrams of all of them: many peers, one quic.Transport. Closing
// the PacketConn closes ln and every stream.
func Server(ln net.Listener, opts Options) *PacketConn {
	opts.setDefaults()
	pc := newPacketConn(opts, &Addr{label: ln.Addr().String()})
	pc.ln = ln
	pc.wg.Add(1)
	go pc.acceptLoop()
	return pc
}

// Client returns a PacketConn over one stream, for one quic.Transport
// that dials RemoteAddr. When the stream ends, reads fail with
// ErrStreamClosed once the datagrams already received are read, which
// ends the QUIC connection promptly instead of at its idle timeout.
func Client(conn net.Conn, opts Options) *PacketConn {
	opts.setDefaults()
	pc := newPacketConn(opts, &Addr{label: conn.LocalAddr().String()})
	pc.streamErr = make(chan struct{})
	p := pc.addPeer(conn, &Addr{id: 1, label: conn.RemoteAddr().String()})
	pc.client = p
	return pc
}

func newPacketConn(opts Options, local *Addr) *PacketConn {
	return &PacketConn{
		opts:   opts,
		local:  local,
		in:     make(chan packet, incomingQueue),
		closed: make(chan struct{}),
		peers:  make(map[uint64]*peer),
		rd:     newDeadline(),
	}
}

// RemoteAddr is a client's peer address, to pass to quic.Transport.Dial.
// It is nil for a server.
func (pc *PacketConn) RemoteAddr() net.Addr {
	if pc.client == nil {
		return nil
	}
	return pc.client.addr
}

// Peers is the number of streams open now.
func (pc *PacketConn) Peers() int {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return len(pc.peers)
}

// QUICConfig returns a copy of base fitted to the tunnel: the packet size
// is fixed at the datagram limit with path MTU discovery off (a byte
// stream has no path MTU to discover, and probes would only be dropped),
// and the handshake may take at least MinHandshakeTimeout.
func (pc *PacketConn) QUICConfig(base *quic.Config) *quic.Config {
	var c *quic.Config
	if base != nil {
		c = base.Clone()
	} else {
		c = &quic.Config{}
	}
	c.InitialPacketSize = uint16(min(pc.opts.MaxDatagram, MaxDatagram))
	c.DisablePathMTUDiscovery = true
	if c.HandshakeIdleTimeout < MinHandshakeTimeout {
		c.HandshakeIdleTimeout = MinHandshakeTimeout
	}
	return c
}

func (pc *PacketConn) acceptLoop() {
	defer pc.wg.Done()
	var delay time.Duration
	for {
		conn, err := pc.ln.Accept()
		if err != nil {
			select {
			case <-pc.closed:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				// Out of file descriptors and the like: wait, as
				// net/http does, rather than spin or give up.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			// The listener is gone; streams already open keep working
			// until Close.
			return
		}
		delay = 0
		if pc.Peers() >= pc.opts.MaxPeers {
			conn.Close()
			continue
		}
		pc.addPeer(conn, &Addr{id: pc.nextID.Add(1), label: ""})
	}
}

func isTemporary(err error) bool {
	t, ok := err.(interface{ Temporary() bool })
	return ok && t.Temporary()
}

func (pc *PacketConn) addPeer(conn net.Conn, addr *Addr) *peer {
	p := &peer{
		pc:   pc,
		addr: addr,
		conn: conn,
		out:  make(chan *[]byte, pc.opts.QueueLen),
		done: make(chan struct{}),
	}
	pc.mu.Lock()
	select {
	case <-pc.closed:
		pc.mu.Unlock()
		conn.Close()
		close(p.done)
		return p
	default:
	}
	pc.peers[addr.id] = p
	pc.wg.Add(2)
	pc.mu.Unlock()
	go p.readLoop()
	go p.writeLoop()
	return p
}

// close ends one stream. Its QUIC connection notices by timeout (server)
// or by ErrStreamClosed (client); no other peer is affected.
func (p *peer) close() {
	p.once.Do(func() {
		// Forget the peer before its stream ends, so that once the far
		// side sees the end, Peers no longer counts it.
		p.pc.mu.Lock()
		delete(p.pc.peers, p.addr.id)
		p.pc.mu.Unlock()
		close(p.done)
		p.conn.Close()
		if p.pc.streamErr != nil {
			close(p.pc.streamErr)
		}
	})
}

func (p *peer) readLoop() {
	defer p.pc.wg.Done()
	defer p.close()
	server := p.pc.ln != nil
	var src io.Reader = p.conn
	if !p.pc.opts.DelayedACK {
		if rc := quickAckConn(p.conn); rc != nil {
			src = &quickAckReader{r: p.conn, rc: rc}
		}
	}
	r := bufio.NewReaderSize(src, 16<<10)
	var hdr [2]byte
	for {
		if server {
			p.conn.SetReadDeadline(time.Now().Add(p.pc.opts.IdleTimeout))
		}
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(hdr[:]))
		if n > p.pc.opts.MaxDatagram {
			// A peer that breaks the limit is broken or hostile;
			// skipping its datagram would leave us trusting the rest of
			// its framing.
			return
		}
		buf := getBuf()
		if _, err := io.ReadFull(r, (*buf)[:n]); err != nil {
			bufPool.Put(buf)
			return
		}
		if n == 0 {
			bufPool.Put(buf)
			continue
		}
		select {
		case p.pc.in <- packet{buf: buf, n: n, from: p.addr}:
		case <-p.done:
			bufPool.Put(buf)
			return
		case <-p.pc.closed:
			bufPool.Put(buf)
			return
		}
	}
}

// quickAckReader reads from a TCP stream and has every read acknowledged
// at once. Without it, a writer that has Nagle's algorithm on (tor does,
// on its SOCKS and onion-service streams) holds the rest of a datagram
// until the kernel's delayed ACK for its first part fires: the tunnel
// waits for a whole datagram before it answers anything, so no data of
// ours carries the ACK earlier.
type quickAckReader struct {
	r  io.Reader
	rc syscall.RawConn
}

func (q *quickAckReader) Read(b []byte) (int, error) {
	n, err := q.r.Read(b)
	if n > 0 {
		quickAck(q.rc)
	}
	return n, err
}

func (p *peer) writeLoop() {
	defer p.pc.wg.Done()
	w := bufio.NewWriterSize(p.conn, 32<<10)
	var hold *time.Timer
	var last time.Time // of the last write
	if p.pc.opts.SmallHold > 0 {
		hold = time.NewTimer(time.Hour)
		hold.Stop()
		defer hold.Stop()
	}
	for {
		var buf *[]byte
		select {
		case buf = <-p.out:
		case <-p.done:
			return
		}
		small := len(*buf)-2 <= smallDatagram
		err := p.write(w, buf)
		// Coalesce what is already queued into one write: a QUIC flight
		// is several packets, and each write is a Tor cell boundary.
		for err == nil && len(p.out) > 0 && w.Buffered() < 24<<10 {
			buf = <-p.out
			small = small && len(*buf)-2 <= smallDatagram
			err = p.write(w, buf)
		}
		if err == nil && small && hold != nil && time.Since(last) > p.pc.opts.SmallHold {
			// Only small datagrams (ACKs, PINGs) after a quiet spell:
			// wait a moment for what usually follows such an ACK, the
			// answer to the request it acknowledges, so that both
			// cross Tor in one write. A small write alone followed by
			// another within tens of milliseconds costs a delayed-ACK
			// timeout at a relay whose socket has Nagle on
			// (docs/tor.md, "Performance"). While data flows, writes
			// follow each other closely and nothing waits: holding
			// the ACKs of a bulk transfer would stall its sender.
			hold.Reset(p.pc.opts.SmallHold)
			select {
			case buf = <-p.out:
				err = p.write(w, buf)
				for err == nil && len(p.out) > 0 && w.Buffered() < 24<<10 {
					err = p.write(w, <-p.out)
				}
				if !hold.Stop() {
					<-hold.C
				}
			case <-hold.C:
			case <-p.done:
				return
			}
		}
		if err == nil {
			err = w.Flush()
			last = time.Now()
		}
		if err != nil {
			p.close()
			return
		}
	}
}

// write buffers one framed datagram and returns its buffer to the pool.
func (p *peer) write(w *bufio.Writer, buf *[]byte) error {
	_, err := w.Write(*buf)
	bufPool.Put(buf)
	return err
}

// ReadFrom reads the next datagram from any stream. A read deadline
// unblocks it with a timeout error (quic.Transport.Close relies on that);
// a stream that ends is never reported here on a server, only on a
// client, where it is the one stream.
func (pc *PacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case p := <-pc.in:
		return pc.deliver(b, p)
	default:
	}
	if err := pc.readErr(); err != nil {
		return 0, nil, err
	}
	select {
	case p := <-pc.in:
		return pc.deliver(b, p)
	case <-pc.closed:
		return 0, nil, pc.opErr("read", net.ErrClosed)
	case <-pc.rd.wait():
		return 0, nil, pc.opErr("read", os.ErrDeadlineExceeded)
	case <-pc.streamErr: // nil on servers: never ready
		// Datagrams that arrived before the end are still delivered.
		select {
		case p := <-pc.in:
			return pc.deliver(b, p)
		default:
		}
		return 0, nil, pc.opErr("read", ErrStreamClosed)
	}
}

func (pc *PacketConn) readErr() error {
	select {
	case <-pc.closed:
		return pc.opErr("read", net.ErrClosed)
	case <-pc.rd.wait():
		return pc.opErr("read", os.ErrDeadlineExceeded)
	default:
		return nil
	}
}

func (pc *PacketConn) deliver(b []byte, p packet) (int, net.Addr, error) {
	n := copy(b, (*p.buf)[:p.n])
	bufPool.Put(p.buf)
	return n, p.from, nil
}

func (pc *PacketConn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "tunnel", Addr: pc.local, Err: err}
}

// WriteTo queues one datagram for the stream of addr. It never blocks: a
// datagram for a full queue is dropped, as UDP would drop it, and QUIC's
// loss recovery resends it. A datagram for a stream that has ended fails
// (that peer's QUIC connection is over).
func (pc *PacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if len(b) > pc.opts.MaxDatagram {
		return 0, pc.opErr("write", fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(b), pc.opts.MaxDatagram))
	}
	select {
	case <-pc.closed:
		return 0, pc.opErr("write", net.ErrClosed)
	default:
	}
	p := pc.client
	if p == nil {
		a, ok := addr.(*Addr)
		if !ok {
			return 0, pc.opErr("write", fmt.Errorf("tunnel: %T is not a tunnel address", addr))
		}
		pc.mu.Lock()
		p = pc.peers[a.id]
		pc.mu.Unlock()
		if p == nil {
			return 0, pc.opErr("write", ErrStreamClosed)
		}
	}
	select {
	case <-p.done:
		return 0, pc.opErr("write", ErrStreamClosed)
	default:
	}
	buf := getBuf()
	binary.BigEndian.PutUint16(*buf, uint16(len(b)))
	copy((*buf)[2:], b)
	*buf = (*buf)[:2+len(b)]
	select {
	case p.out <- buf:
	default:
		bufPool.Put(buf)
	}
	return len(b), nil
}

// Close closes the listener (server) and every stream, and waits for the
// goroutines of the PacketConn to end. It never waits on a peer.
func (pc *PacketConn) Close() error {
	pc.once.Do(func() {
		pc.mu.Lock()
		close(pc.closed)
		peers := make([]*peer, 0, len(pc.peers))
		for _, p := range pc.peers {
			peers = append(peers, p)
		}
		pc.mu.Unlock()
		if pc.ln != nil {
			pc.ln.Close()
		}
		for _, p := range peers {
			p.close()
		}
		pc.rd.stop()
	})
	pc.wg.Wait()
	return nil
}

// LocalAddr names the listener or the client's end of its stream.
func (pc *PacketConn) LocalAddr() net.Addr { return pc.local }

// SetDeadline sets the read deadline; writes never block.
func (pc *PacketConn) SetDeadline(t time.Time) error { return pc.SetReadDeadline(t) }

// SetReadDeadline unblocks a pending ReadFrom at t, as a UDP socket does.
func (pc *PacketConn) SetReadDeadline(t time.Time) error {
	pc.rd.set(t)
	return nil
}

// SetWriteDeadline is accepted and ignored: WriteTo never blocks.
func (pc *PacketConn) SetWriteDeadline(time.Time) error { return nil }

// SetReadBuffer is a no-op: quic-go asks every PacketConn to grow its
// socket buffers and warns if it cannot; the tunnel's queues are its own.
func (pc *PacketConn) SetReadBuffer(int) error { return nil }

// SetWriteBuffer is a no-op, like SetReadBuffer.
func (pc *PacketConn) SetWriteBuffer(int) error { return nil }

// deadline is a resettable timer whose channel is closed once the time
// has passed (the pattern of net.Pipe).
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	cancel chan struct{}
}

func newDeadline() deadline { return deadline{cancel: make(chan struct{})} }

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired and closed it; wait is over
	}
	d.timer = nil
	closed := isClosed(d.cancel)
	if t.IsZero() {
		if closed {
			d.cancel = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.cancel = make(chan struct{})
		}
		cancel := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(cancel) })
		return
	}
	if !closed {
		close(d.cancel)
	}
}

func (d *deadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
