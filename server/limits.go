package server

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/wire"
)

// Limit defaults (docs/operations.md explains how to size them).
const (
	DefaultMaxConns        = 10_000
	DefaultMaxConnsPerAddr = 64
	DefaultRequestRate     = 200
	DefaultRequestBurst    = 400
)

func (o *Options) setLimitDefaults() {
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.MaxConnsPerAddr <= 0 {
		o.MaxConnsPerAddr = DefaultMaxConnsPerAddr
	}
	if o.RequestRate <= 0 {
		o.RequestRate = DefaultRequestRate
	}
	if o.RequestBurst <= 0 {
		o.RequestBurst = DefaultRequestBurst
	}
	if len(o.Versions) == 0 {
		o.Versions = wire.SupportedVersions()
	}
}

// connLimiter counts open connections, in total and per clearnet source.
// The addresses live only in this map, only while their connections are
// open; nothing logs or exports them.
type connLimiter struct {
	mu      sync.Mutex
	total   int
	perAddr map[netip.Prefix]int
}

// sourceKey is what the per-address limit counts: the IPv4 address, or
// the /64 of an IPv6 address (one subscriber usually holds a whole /64,
// so counting single IPv6 addresses would limit nothing).
func sourceKey(a net.Addr) (netip.Prefix, bool) {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(ua.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, err := ip.Prefix(bits)
	return p, err == nil
}

// admit takes a connection slot, or says which limit refuses it. Over Tor
// every client arrives from the tunnel's one address, so only the global
// limit applies there.
func (s *Server) admit(conn *quic.Conn, transport string) (release func(), refusal *wire.Error) {
	l := &s.connLimits
	key, perAddr := netip.Prefix{}, false
	if transport != metrics.TransportTor {
		key, perAddr = sourceKey(conn.RemoteAddr())
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= s.opts.MaxConns {
		s.opts.Metrics.Refused(metrics.LimitConnections)
		return nil, wire.Errorf(wire.CodeUnavailable, "server at its connection limit, retry later")
	}
	if perAddr {
		if l.perAddr == nil {
			l.perAddr = make(map[netip.Prefix]int)
		}
		if l.perAddr[key] >= s.opts.MaxConnsPerAddr {
			s.opts.Metrics.Refused(metrics.LimitConnectionsPerAddr)
			return nil, wire.Errorf(wire.CodeRateLimited, "too many connections from your address, retry later")
		}
		l.perAddr[key]++
	}
	l.total++
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.total--
		if perAddr {
			if l.perAddr[key]--; l.perAddr[key] <= 0 {
				delete(l.perAddr, key)
			}
		}
	}, nil
}

// refuseConn answers the connection's hello with the refusal, so the
// client learns the code (both are retryable), then closes it. It waits
// for the client to close first, at most a second, because closing the
// connection at once could discard the Error record in flight.
func (s *Server) refuseConn(conn *quic.Conn, refusal *wire.Error) {
	timeout := min(s.opts.HandshakeTimeout, 2*time.Second)
	ctx, cancel := contextWithTimeout(conn, timeout)
	defer cancel()
	defer conn.CloseWithError(closeRefused, refusal.Detail)
	st, err := conn.AcceptStream(ctx)
	if err != nil {
		return
	}
	st.SetDeadline(time.Now().Add(timeout))
	r := wire.NewReader(st, padding.Control)
	if _, err := r.ReadMessage(); err != nil {
		return
	}
	s.writeError(st, padding.Control, refusal)
	st.Close()
	<-ctx.Done() // the client closes when it has read the Error
}

// lingerClose closes a connection whose hello failed after giving the
// client up to a second to read the Error record and close first: closing
// at once can discard the record, and the client would see a bare
// connection error instead of the code (VERSION, PROTOCOL) that says why.
func lingerClose(conn *quic.Conn, code quic.ApplicationErrorCode, reason string) {
	ctx, cancel := contextWithTimeout(conn, time.Second)
	defer cancel()
	<-ctx.Done()
	conn.CloseWithError(code, reason)
}
