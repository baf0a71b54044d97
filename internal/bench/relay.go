package bench

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/wire"
)

// relay is the baseline: an in-memory delivery server. It mirrors the
// structure of server.Server request for request (hello on the first
// stream, then one goroutine and one wire.Reader per request stream, the
// same deadlines, signature checks and padded records, a subscription that
// writes the backlog then waits for wakes) so that the only thing it
// leaves out is the store. It serves only what the load needs, is not
// hardened, and keeps everything in memory: it is a yardstick, never a
// server.
type relay struct {
	tls    *tls.Config
	quic   *quic.Config
	policy padding.Policy
	limits wire.Limits

	tr *quic.Transport
	ln *quic.Listener
	pc net.PacketConn

	mu     sync.Mutex
	boxes  map[wire.ID]*relayBox // by receive ID
	bySend map[wire.ID]*relayBox
	conns  map[*quic.Conn]struct{}
	closed bool

	wg sync.WaitGroup // accept loop and every connection handler
}

// Timeouts of the relay: the server's defaults (server.Options).
const (
	relayHandshakeTimeout = 10 * time.Second
	relayIdleTimeout      = 60 * time.Second
	relayRequestTimeout   = 30 * time.Second
	relayMaxStreams       = 100
)

type relayBox struct {
	owner ed25519.PublicKey

	mu   sync.Mutex
	next uint64                     // next sequence number, from 1
	msgs map[uint64]*wire.Delivery  // stored, not yet acked
	ids  map[wire.MessageID]uint64  // idempotency: message ID -> seq
	subs map[chan struct{}]struct{} // wake channels of subscriptions, buffered 1
}

// startRelay listens on 127.0.0.1 (a random port) with tlsConf, which the
// caller takes from a server.Identity so that the handshake, certificate
// and ALPN are the real server's.
func startRelay(tlsConf *tls.Config, policy padding.Policy) (*relay, error) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	r := &relay{
		tls: tlsConf,
		quic: &quic.Config{
			HandshakeIdleTimeout:  relayHandshakeTimeout,
			MaxIdleTimeout:        relayIdleTimeout,
			MaxIncomingStreams:    relayMaxStreams,
			MaxIncomingUniStreams: -1,
		},
		policy: policy,
		// The same limits the server derives from the same policy.
		limits: wire.Limits{
			MaxEnvelope: uint32(wire.MaxEnvelope(policy)),
			MaxFetch:    wire.MaxFetchLimit,
			MaxAckIDs:   wire.MaxAckIDs,
			TTLSeconds:  uint32((21 * 24 * time.Hour) / time.Second),
		},
		pc:     pc,
		boxes:  make(map[wire.ID]*relayBox),
		bySend: make(map[wire.ID]*relayBox),
		conns:  make(map[*quic.Conn]struct{}),
	}
	r.tr = &quic.Transport{Conn: pc}
	r.ln, err = r.tr.Listen(tlsConf, r.quic)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("relay: %w", err)
	}
	r.wg.Add(1)
	go r.accept()
	return r, nil
}

// Addr is the relay's UDP address (127.0.0.1:port).
func (r *relay) Addr() string { return r.pc.LocalAddr().String() }

// Close ends every connection and waits for the handlers.
func (r *relay) Close() {
	r.mu.Lock()
	r.closed = true
	for c := range r.conns {
		c.CloseWithError(0, "relay closing")
	}
	r.mu.Unlock()
	r.ln.Close()
	r.wg.Wait()
	r.tr.Close()
	r.pc.Close()
}

func (r *relay) accept() {
	defer r.wg.Done()
	for {
		conn, err := r.ln.Accept(context.Background())
		if err != nil {
			return
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			conn.CloseWithError(0, "relay closing")
			continue
		}
		r.conns[conn] = struct{}{}
		r.wg.Add(1)
		r.mu.Unlock()
		go r.handleConn(conn)
	}
}

func (r *relay) handleConn(conn *quic.Conn) {
	defer r.wg.Done()
	defer func() {
		r.mu.Lock()
		delete(r.conns, conn)
		r.mu.Unlock()
	}()
	cs := conn.ConnectionState().TLS
	binding, err := cs.ExportKeyingMaterial(wire.ExporterLabel, nil, wire.BindingSize)
	if err != nil {
		conn.CloseWithError(1, "no TLS exporter")
		return
	}
	if err := r.hello(conn); err != nil {
		conn.CloseWithError(1, "handshake failed")
		return
	}
	var streams sync.WaitGroup
	defer streams.Wait()
	for {
		st, err := conn.AcceptStream(conn.Context())
		if err != nil {
			return
		}
		streams.Add(1)
		go func() {
			defer streams.Done()
			r.handleStream(conn, binding, st)
		}()
	}
}

func (r *relay) hello(conn *quic.Conn) error {
	ctx, cancel := context.WithTimeout(conn.Context(), relayHandshakeTimeout)
	defer cancel()
	st, err := conn.AcceptStream(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(relayHandshakeTimeout))
	m, err := wire.NewReader(st, padding.Control).ReadMessage()
	if err != nil {
		return err
	}
	ch, ok := m.(*wire.ClientHello)
	if !ok || !slices.Contains(ch.Versions, wire.ProtocolVersion) {
		wire.WriteMessage(st, padding.Control, &wire.ErrorMessage{Code: wire.CodeVersion, Detail: "relay speaks version 1"})
		return errors.New("relay: bad hello")
	}
	return wire.WriteMessage(st, padding.Control, &wire.ServerHello{
		Version: wire.ProtocolVersion, Policy: r.policy, Limits: r.limits,
	})
}

func (r *relay) handleStream(conn *quic.Conn, binding []byte, st *quic.Stream) {
	defer st.Close()
	st.SetReadDeadline(time.Now().Add(relayRequestTimeout))
	m, err := wire.NewReader(st, r.policy).ReadMessage()
	if err != nil {
		st.CancelWrite(0)
		return
	}
	if sub, ok := m.(*wire.Subscribe); ok {
		r.subscribe(conn, binding, st, sub)
		return
	}
	var resp wire.Message
	switch m := m.(type) {
	case *wire.CreateMailbox:
		resp = r.createMailbox(binding, m)
	case *wire.Send:
		resp = r.send(m)
	case *wire.Ack:
		resp = r.ack(binding, m)
	default:
		resp = &wire.ErrorMessage{Code: wire.CodeUnknownKind, Detail: "not served by the relay"}
	}
	st.SetWriteDeadline(time.Now().Add(relayRequestTimeout))
	wire.WriteMessage(st, r.policy, resp)
	// Read on to the client's FIN. quic-go returns a stream's credit to
	// the peer (MAX_STREAMS) only once the application has read the FIN
	// or cancelled reading; a FIN that arrives after the request's last
	// byte would otherwise hold one of the connection's 100 stream slots
	// for good, and after 100 such streams every new request waits for
	// the client's 30 s request timeout and a redial.
	drainFIN(st)
}

// drainFIN reads st to its end, bounded by the read deadline already set.
func drainFIN(st *quic.Stream) {
	var buf [64]byte
	for {
		if _, err := st.Read(buf[:]); err != nil {
			return
		}
	}
}

func (r *relay) createMailbox(binding []byte, m *wire.CreateMailbox) wire.Message {
	owner := ed25519.PublicKey(m.OwnerKey[:])
	if !wire.Verify(m, owner, binding) {
		return &wire.ErrorMessage{Code: wire.CodeUnauthorized, Detail: "owner signature does not verify"}
	}
	var resp wire.MailboxCreated
	rand.Read(resp.ReceiveID[:])
	rand.Read(resp.SendID[:])
	box := &relayBox{
		owner: slices.Clone(owner),
		next:  1,
		msgs:  make(map[uint64]*wire.Delivery),
		ids:   make(map[wire.MessageID]uint64),
		subs:  make(map[chan struct{}]struct{}),
	}
	r.mu.Lock()
	r.boxes[resp.ReceiveID] = box
	r.bySend[resp.SendID] = box
	r.mu.Unlock()
	return &resp
}

func (r *relay) box(id wire.ID, bySend bool) *relayBox {
	r.mu.Lock()
	defer r.mu.Unlock()
	if bySend {
		return r.bySend[id]
	}
	return r.boxes[id]
}

// send is the baseline's whole "store": a map insert under the mailbox
// lock, idempotent by message ID like the real store, then a wake.
func (r *relay) send(m *wire.Send) wire.Message {
	if len(m.Envelope) > int(r.limits.MaxEnvelope) {
		return &wire.ErrorMessage{Code: wire.CodeTooLarge, Detail: "envelope too large"}
	}
	b := r.box(m.SendID, true)
	if b == nil {
		return &wire.ErrorMessage{Code: wire.CodeNotFound, Detail: "no such mailbox"}
	}
	b.mu.Lock()
	if _, dup := b.ids[m.MessageID]; dup {
		b.mu.Unlock()
		return &wire.Sent{MessageID: m.MessageID, Duplicate: true}
	}
	seq := b.next
	b.next++
	b.ids[m.MessageID] = seq
	b.msgs[seq] = &wire.Delivery{Seq: seq, MessageID: m.MessageID, ReceivedAt: uint64(time.Now().Truncate(time.Minute).Unix()), Envelope: m.Envelope}
	for w := range b.subs {
		select {
		case w <- struct{}{}:
		default:
		}
	}
	b.mu.Unlock()
	return &wire.Sent{MessageID: m.MessageID}
}

func (r *relay) ack(binding []byte, m *wire.Ack) wire.Message {
	b := r.box(m.ReceiveID, false)
	if b == nil {
		return &wire.ErrorMessage{Code: wire.CodeNotFound, Detail: "no such mailbox"}
	}
	if !wire.Verify(m, b.owner, binding) {
		return &wire.ErrorMessage{Code: wire.CodeUnauthorized, Detail: "owner signature does not verify"}
	}
	n := 0
	b.mu.Lock()
	for _, id := range m.MessageIDs {
		if seq, ok := b.ids[id]; ok {
			if _, stored := b.msgs[seq]; stored {
				delete(b.msgs, seq)
				n++
			}
		}
	}
	b.mu.Unlock()
	return &wire.Acked{Deleted: uint16(n)}
}

// after returns up to limit stored messages with seq > cursor, in order.
func (b *relayBox) after(cursor uint64, limit int) (msgs []*wire.Delivery, more bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for seq := cursor + 1; seq < b.next; seq++ {
		d, ok := b.msgs[seq]
		if !ok {
			continue // acked
		}
		if len(msgs) == limit {
			return msgs, true
		}
		msgs = append(msgs, d)
	}
	return msgs, false
}

// subscribe follows server.subscribe: backlog, FetchEnd, then pushes after
// every wake, one padded Delivery record per message and Write.
func (r *relay) subscribe(conn *quic.Conn, binding []byte, st *quic.Stream, m *wire.Subscribe) {
	b := r.box(m.ReceiveID, false)
	var refuse *wire.ErrorMessage
	switch {
	case b == nil:
		refuse = &wire.ErrorMessage{Code: wire.CodeNotFound, Detail: "no such mailbox"}
	case !wire.Verify(m, b.owner, binding):
		refuse = &wire.ErrorMessage{Code: wire.CodeUnauthorized, Detail: "owner signature does not verify"}
	}
	if refuse != nil {
		st.SetWriteDeadline(time.Now().Add(relayRequestTimeout))
		wire.WriteMessage(st, r.policy, refuse)
		return
	}
	st.SetReadDeadline(time.Time{})
	wake := make(chan struct{}, 1)
	b.mu.Lock()
	b.subs[wake] = struct{}{}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.subs, wake)
		b.mu.Unlock()
	}()
	clientGone := make(chan struct{})
	go func() {
		buf := make([]byte, 512)
		for {
			if _, err := st.Read(buf); err != nil {
				break
			}
		}
		close(clientGone)
	}()
	cursor, marked := m.After, false
	var rec []byte
	for {
		for {
			msgs, more := b.after(cursor, int(r.limits.MaxFetch))
			st.SetWriteDeadline(time.Now().Add(relayRequestTimeout))
			for _, d := range msgs {
				var err error
				if rec, err = wire.AppendMessage(rec[:0], r.policy, d); err != nil {
					return
				}
				if _, err := st.Write(rec); err != nil {
					return
				}
				cursor = d.Seq
			}
			if !more {
				break
			}
		}
		if !marked {
			if wire.WriteMessage(st, r.policy, &wire.FetchEnd{}) != nil {
				return
			}
			marked = true
		}
		select {
		case <-wake:
		case <-clientGone:
			return
		case <-conn.Context().Done():
			return
		}
	}
}
