package hostile

import (
	"io"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/wire"
)

// Exchange is one record the server is about to send, with the request it
// answers. A rewrite hook may replace Response, drop it, or add records
// after it (Extra, written in order). Records go out padded with the
// stream's policy (padding.Control on a connection's first stream).
type Exchange struct {
	Tag      string          // the tag of the listener the connection came in on
	Conn     server.ConnInfo // the connection
	Stream   int             // the stream's number on its connection, 0 for the handshake
	Request  wire.Message    // the latest record the client sent on this stream (nil: none yet)
	Response wire.Message    // the record the server wrote
	Drop     bool
	Extra    []wire.Message
}

// Event is one record the server saw or sent, as the server saw it: the
// whole view of an observer inside the server.
type Event struct {
	Time       time.Time
	Tag        string
	Conn       uint64
	Transport  string
	Stream     int
	FromClient bool         // a request record; else one the server sent (after any rewrite; recorded as its write begins)
	Kind       wire.Kind    // the record's kind
	Size       int          // the record's bytes on the wire (its bucket)
	Message    wire.Message // decoded
}

// tap is the server.StreamTap of a hostile server.
func (h *Server) tap(c server.ConnInfo, st server.Stream) server.Stream {
	h.mu.Lock()
	n := h.streams[c.ID]
	h.streams[c.ID] = n + 1
	tag := h.tags[c.LocalAddr.String()]
	h.mu.Unlock()
	policy := h.policy
	if n == 0 {
		policy = padding.Control // the version handshake (docs/protocol.md §4.1)
	}
	pr, pw := io.Pipe()
	ts := &tapStream{Stream: st, h: h, conn: c, tag: tag, n: n, policy: policy, pw: pw, done: make(chan struct{})}
	go ts.forward(pr)
	return ts
}

// tapStream sits between the server's handlers and the QUIC stream: it
// decodes what the client sends and passes it on unchanged; what the
// server writes goes through a pipe to forward, which applies the hooks.
type tapStream struct {
	server.Stream
	h      *Server
	conn   server.ConnInfo
	tag    string
	n      int
	policy padding.Policy

	mu  sync.Mutex
	in  []byte       // client bytes not yet decoded
	req wire.Message // the latest decoded request

	pw        *io.PipeWriter
	closeOnce sync.Once
	done      chan struct{}
}

func (s *tapStream) Read(p []byte) (int, error) {
	n, err := s.Stream.Read(p)
	if n > 0 {
		s.observe(p[:n])
	}
	return n, err
}

// observe decodes whole request records from the client's bytes.
func (s *tapStream) observe(b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.in = append(s.in, b...)
	for {
		kind, body, rest, err := wire.ParseRecord(s.policy, s.in)
		if err != nil {
			return // incomplete (or malformed: the server answers that itself)
		}
		size := len(s.in) - len(rest)
		m, derr := wire.Decode(kind, body)
		s.in = append(s.in[:0], rest...)
		if derr != nil {
			continue
		}
		s.req = m
		s.h.record(Event{Tag: s.tag, Conn: s.conn.ID, Transport: s.conn.Transport, Stream: s.n,
			FromClient: true, Kind: kind, Size: size, Message: m})
	}
}

func (s *tapStream) request() wire.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.req
}

func (s *tapStream) Write(p []byte) (int, error) { return s.pw.Write(p) }

// forward reads the server's records from the pipe, runs the hooks and
// writes what they leave to the client.
func (s *tapStream) forward(pr *io.PipeReader) {
	defer close(s.done)
	r := wire.NewReader(pr, s.policy)
	for {
		m, err := r.ReadMessage()
		if err != nil {
			if err != io.EOF {
				pr.CloseWithError(err)
			}
			return
		}
		x := &Exchange{Tag: s.tag, Conn: s.conn, Stream: s.n, Request: s.request(), Response: m}
		s.h.rewrite(x)
		out := x.Extra
		if !x.Drop && x.Response != nil {
			out = append([]wire.Message{x.Response}, x.Extra...)
		}
		for _, m := range out {
			rec, err := wire.AppendMessage(nil, s.policy, m)
			if err != nil {
				pr.CloseWithError(err)
				return
			}
			// Recorded before the write: once the client has the record,
			// a test reading Events must find it (recorded after, a
			// client on a loaded machine could act on the answer, and
			// the test look, before this goroutine ran again).
			s.h.record(Event{Tag: s.tag, Conn: s.conn.ID, Transport: s.conn.Transport, Stream: s.n,
				Kind: m.Kind(), Size: len(rec), Message: m})
			if _, err := s.Stream.Write(rec); err != nil {
				pr.CloseWithError(err)
				return
			}
		}
	}
}

// flush ends the server's side of the pipe and waits until every record
// it wrote has gone out.
func (s *tapStream) flush() {
	s.closeOnce.Do(func() { s.pw.Close() })
	<-s.done
}

func (s *tapStream) Close() error {
	s.flush()
	return s.Stream.Close()
}

func (s *tapStream) CancelWrite(code quic.StreamErrorCode) {
	s.closeOnce.Do(func() { s.pw.CloseWithError(io.ErrClosedPipe) })
	<-s.done
	s.Stream.CancelWrite(code)
}
