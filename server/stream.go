package server

import (
	"context"
	"errors"
	"io"
	"os"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/wire"
)

// Request streams: reading one request record, dispatching it by kind to
// its handler, writing the answer or a coded error, and finishing the
// stream so its slot goes back to the client.

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
