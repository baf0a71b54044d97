package server

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/quicprochat/qpc/server/accounts"
	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/wire"
)

// Observer writes the observer record of the traffic-analysis lab
// (issue 19; docs/research.md "## Records"): one JSON line for every
// event of the delivery service's request path, as the handlers see it
// at that point. It collects nothing the server does not already hold
// while it serves a request: connection IDs, request kinds, record
// sizes, mailbox IDs, token epochs, account IDs and KT labels. Nothing
// is reconstructed afterwards.
//
// An Observer exists for research on a server one runs oneself: it is off
// unless Options.Observer is set (config key observer_record), the server
// warns in its log while it is on, and no packaged configuration sets it.
//
// The record's format is lab/record's observer record; the server does
// not import the lab (ARCHITECTURE.md), so this file has its own encoder,
// and lab tests read what it writes with lab/record.
type Observer struct {
	mu    sync.Mutex
	bw    *bufio.Writer
	start time.Time
	last  int64
	buf   []byte
	err   error
	lines int64
	// warnEvery is how often the log repeats the warning: ObserverWarnEvery
	// (tests shorten it).
	warnEvery time.Duration
}

// ObserverSchema and ObserverVersion name the format in the header line.
const (
	ObserverSchema  = "qpc-observer"
	ObserverVersion = 1
)

// NewObserver writes the record's header to w and returns the Observer
// that appends to it. Times count from now.
func NewObserver(w io.Writer) (*Observer, error) {
	o := &Observer{bw: bufio.NewWriterSize(w, 64<<10), start: time.Now(), warnEvery: ObserverWarnEvery}
	hdr := fmt.Sprintf(`{"v":%d,"schema":%q,"start":%q}`+"\n", ObserverVersion, ObserverSchema,
		o.start.UTC().Format(time.RFC3339Nano))
	if _, err := o.bw.WriteString(hdr); err != nil {
		return nil, fmt.Errorf("observer record: %w", err)
	}
	return o, o.Flush()
}

// Flush writes buffered lines to the underlying writer.
func (o *Observer) Flush() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err == nil {
		if err := o.bw.Flush(); err != nil {
			o.err = fmt.Errorf("observer record: %w", err)
		}
	}
	return o.err
}

// Err is the first write error, after which the Observer writes nothing.
func (o *Observer) Err() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// Lines is the number of events written.
func (o *Observer) Lines() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.lines
}

// Event values (lab/record's Ev*).
const (
	obsOpen      = "open"
	obsClose     = "close"
	obsRequest   = "request"
	obsDeliver   = "deliver"
	obsAck       = "ack"
	obsSubscribe = "subscribe"
	obsError     = "error"
)

// obsEvent is one line before encoding. Zero fields are left out.
type obsEvent struct {
	conn      string
	ev        string
	transport string
	kind      string
	mailbox   *wire.ID
	sendID    *wire.ID
	bucket    int
	epoch     uint32
	hasEpoch  bool
	n         int
	account   *accounts.AccountRef
	handle    string
	hasHandle bool
	code      string
}

// write appends e with the time taken under the lock, so times never go
// back in the record.
func (o *Observer) write(e *obsEvent) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err != nil {
		return
	}
	t := max(int64(time.Since(o.start)), o.last)
	o.last = t
	b := append(o.buf[:0], `{"t":`...)
	b = strconv.AppendInt(b, t, 10)
	b = append(b, `,"conn":"`...)
	b = append(b, e.conn...) // a server-made name: c<n> or r<n>
	b = append(b, `","ev":"`...)
	b = append(b, e.ev...)
	b = append(b, '"')
	str := func(key, v string) {
		if v != "" {
			b = append(b, `,"`...)
			b = append(b, key...)
			b = append(b, `":"`...)
			b = append(b, v...) // fixed names: no escaping needed
			b = append(b, '"')
		}
	}
	id := func(key string, v []byte) {
		b = append(b, `,"`...)
		b = append(b, key...)
		b = append(b, `":"`...)
		b = hex.AppendEncode(b, v)
		b = append(b, '"')
	}
	num := func(key string, v int64) {
		b = append(b, `,"`...)
		b = append(b, key...)
		b = append(b, `":`...)
		b = strconv.AppendInt(b, v, 10)
	}
	str("transport", e.transport)
	str("kind", e.kind)
	if e.mailbox != nil {
		id("mailbox", e.mailbox[:])
	}
	if e.sendID != nil {
		id("send_id", e.sendID[:])
	}
	if e.bucket > 0 {
		num("bucket", int64(e.bucket))
	}
	if e.hasEpoch {
		num("epoch", int64(e.epoch))
	}
	if e.n > 0 {
		num("n", int64(e.n))
	}
	if e.account != nil {
		id("account", e.account[:])
	}
	if e.hasHandle {
		// A label is client input: JSON-encode it. Labels are bounded by
		// the wire decoder (wire.MaxLabel).
		q, _ := json.Marshal(e.handle)
		b = append(b, `,"handle":`...)
		b = append(b, q...)
	}
	str("code", e.code)
	b = append(b, "}\n"...)
	o.buf = b
	if _, err := o.bw.Write(b); err != nil {
		o.err = fmt.Errorf("observer record: %w", err)
		return
	}
	o.lines++
}

// kindNames caches wire.KindName for every kind, so that the record never
// pays for fmt on the request path.
var kindNames = sync.OnceValue(func() (names [256]string) {
	for k := range names {
		n := wire.KindName(wire.Kind(k))
		if len(n) > 5 && n[:5] == "kind " { // not a kind this version knows
			n = fmt.Sprintf("0x%02x", k)
		}
		names[k] = n
	}
	return names
})

func obsTransport(transport string) string {
	if transport == metrics.TransportTor {
		return "onion"
	}
	return "udp"
}

func obsConn(id uint64) string { return "c" + strconv.FormatUint(id, 10) }

// obsReq collects what the handlers of one request record learn, and is
// written once: before the first delivery of a Fetch or Subscribe, or when
// the request is answered.
type obsReq struct {
	o       *Observer
	e       obsEvent
	written bool
}

type obsKey struct{}

// observeRequest starts the request event of m, read on connection conn
// as a record of size bytes, with what the record itself carries. It
// returns nil when the record is off.
func (s *Server) observeRequest(conn string, m wire.Message, size int) *obsReq {
	if s.opts.Observer == nil {
		return nil
	}
	r := &obsReq{o: s.opts.Observer, e: obsEvent{conn: conn, ev: obsRequest, kind: kindNames()[m.Kind()], bucket: size}}
	e := &r.e
	token := func(auth []byte) {
		if tok, err := tokens.ParseToken(auth); err == nil {
			e.epoch, e.hasEpoch = tok.Epoch, true
		}
	}
	switch m := m.(type) {
	case *wire.CreateMailbox:
		token(m.Auth)
	case *wire.Send:
		e.sendID = &m.SendID
		token(m.Auth)
	case *wire.FetchKeyPackage:
		e.handle, e.hasHandle = m.Handle, true
		token(m.Auth)
	case wire.Signed: // Fetch, Subscribe, Ack, DeleteMailbox
		id := m.Mailbox()
		e.mailbox = &id
	case *wire.IssueTokens:
		if req, err := tokens.ParseTokenRequest(m.Request); err == nil {
			e.epoch, e.hasEpoch, e.n = req.Epoch, true, len(req.Blinded)
		}
	case *wire.KTPublish:
		e.handle, e.hasHandle = m.Label, true
	case *wire.KTLookup:
		e.handle, e.hasHandle = m.Label, true
	case *wire.KTLookupBatch:
		e.handle, e.hasHandle = strings.Join(m.Labels, ","), true
	case *wire.KTHistory:
		e.handle, e.hasHandle = m.Label, true
	}
	return r
}

// write writes the request event unless it was written already.
func (r *obsReq) write() {
	if r == nil || r.written {
		return
	}
	r.written = true
	r.o.write(&r.e)
}

// fail writes the request event and then an error event with err's code.
func (r *obsReq) fail(err error) {
	if r == nil {
		return
	}
	r.write()
	r.o.write(&obsEvent{conn: r.e.conn, ev: obsError, kind: r.e.kind, code: obsCode(err)})
}

func obsCode(err error) string {
	code := wire.CodeInternal
	var we *wire.Error
	if errors.As(err, &we) {
		code = we.Code
	}
	return code.String()
}

// withReq carries r to the handlers, which add what they learn through
// reqOf. It costs nothing when the record is off (r is nil).
func withReq(ctx context.Context, r *obsReq) context.Context {
	if r == nil {
		return ctx
	}
	return context.WithValue(ctx, obsKey{}, r)
}

// reqOf is the request event of ctx, nil when the record is off. Callers
// check s.opts.Observer first so that the lookup costs nothing when off.
func reqOf(ctx context.Context) *obsReq {
	r, _ := ctx.Value(obsKey{}).(*obsReq)
	return r
}

// noteAccount adds the account the request authenticated as.
func (s *Server) noteAccount(ctx context.Context, acct accounts.AccountRef) {
	if s.opts.Observer == nil {
		return
	}
	if r := reqOf(ctx); r != nil {
		r.e.account = &acct
	}
}

// noteMailbox adds the mailbox a request resolved or created.
func (s *Server) noteMailbox(ctx context.Context, receive [wire.IDSize]byte, send *[wire.IDSize]byte) {
	if s.opts.Observer == nil {
		return
	}
	if r := reqOf(ctx); r != nil {
		r.e.mailbox = (*wire.ID)(&receive)
		if send != nil {
			r.e.sendID = (*wire.ID)(send)
		}
	}
}

// observeConn writes a connection's open event.
func (s *Server) observeConn(conn, transport string) {
	if o := s.opts.Observer; o != nil {
		o.write(&obsEvent{conn: conn, ev: obsOpen, transport: obsTransport(transport)})
	}
}

// observe writes an event with no request behind it: close, deliver,
// ack, subscribe, or an error answering a record that did not decode.
func (s *Server) observe(e obsEvent) {
	if o := s.opts.Observer; o != nil {
		o.write(&e)
	}
}

// observerWarning is what the log says at startup and every
// ObserverWarnEvery while the record is on.
const observerWarning = "the observer record is ON: every request, connection and delivery is written to a file for traffic-analysis research; never run a production server like this"

// ObserverWarnEvery is how often the log repeats observerWarning.
const ObserverWarnEvery = time.Minute

// warnObserver logs observerWarning every ObserverWarnEvery until stop is
// closed, flushing the record each time. New logs the first at once.
func (s *Server) warnObserver(stop <-chan struct{}) {
	o := s.opts.Observer
	t := time.NewTicker(o.warnEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			s.log.Warn(observerWarning, "events", o.Lines())
			if err := o.Flush(); err != nil {
				s.log.Error("observer record", "err", err)
			}
		}
	}
}
