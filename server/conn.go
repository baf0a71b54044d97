package server

import (
	"context"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quicprochat/qpc/internal/ratelimit"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/wire"
	"golang.org/x/sync/semaphore"
)

// Connections: admitting one (the drain and per-source limits), its
// ServerHello, and accepting its request streams until it closes.

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
