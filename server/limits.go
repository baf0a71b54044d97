package server

import (
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/server/config"
	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/wire"
)

func (o *Options) setLimitDefaults() {
	orDefault(&o.MaxConns, config.DefaultMaxConns)
	orDefault(&o.MaxConnsPerAddr, config.DefaultMaxConnsPerAddr)
	orDefault(&o.MaxConnsPerNet, config.DefaultMaxConnsPerNet)
	if o.MaxConnsTor <= 0 {
		// Half the slots: an onion flood, which the per-address caps
		// cannot tell apart, leaves the other half to clearnet clients.
		o.MaxConnsTor = max(1, o.MaxConns/2)
	}
	orDefault(&o.RequestRate, config.DefaultRequestRate)
	orDefault(&o.RequestBurst, config.DefaultRequestBurst)
	if len(o.Versions) == 0 {
		o.Versions = wire.SupportedVersions()
	}
}

// connLimiter counts open connections: in total, through the onion
// service, and per clearnet source and source network. The addresses live
// only in this map, only while their connections are open; nothing logs
// or exports them.
type connLimiter struct {
	mu      sync.Mutex
	total   int
	tor     int
	perAddr map[netip.Prefix]int // IPv4 /32 and IPv6 /64 (MaxConnsPerAddr), IPv6 /48 (MaxConnsPerNet)
}

// sourceKeys is what the per-address limits count: the IPv4 address, or
// the /64 of an IPv6 address (one subscriber usually holds a whole /64,
// so counting single IPv6 addresses would limit nothing) and its /48 (a
// site usually holds a whole /48). IPv4 has no network key: many honest
// users share one IPv4 address behind a carrier-grade NAT already.
func sourceKeys(a net.Addr) (addr, network netip.Prefix, ok bool) {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return addr, network, false
	}
	ip, ok := netip.AddrFromSlice(ua.IP)
	if !ok {
		return addr, network, false
	}
	ip = ip.Unmap()
	if ip.Is4() {
		addr, err := ip.Prefix(32)
		return addr, network, err == nil
	}
	addr, err := ip.Prefix(64)
	if err != nil {
		return addr, network, false
	}
	network, err = ip.Prefix(48)
	return addr, network, err == nil
}

// admit takes a connection slot, or says which limit refuses it.
func (s *Server) admit(conn *quic.Conn, transport string) (release func(), refusal *wire.Error) {
	return s.admitFrom(conn.RemoteAddr(), transport)
}

// admitFrom is admit for a connection from remote. Over Tor every client
// arrives from the tunnel's one address: the onion cap applies there
// instead of the per-address ones.
func (s *Server) admitFrom(remote net.Addr, transport string) (release func(), refusal *wire.Error) {
	l := &s.connLimits
	tor := transport == metrics.TransportTor
	var addr, network netip.Prefix
	perAddr := false
	if !tor {
		addr, network, perAddr = sourceKeys(remote)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= s.opts.MaxConns {
		s.opts.Metrics.Refused(metrics.LimitConnections)
		return nil, wire.Errorf(wire.CodeUnavailable, "server at its connection limit, retry later")
	}
	if tor && l.tor >= s.opts.MaxConnsTor {
		s.opts.Metrics.Refused(metrics.LimitConnectionsTor)
		return nil, wire.Errorf(wire.CodeUnavailable, "server at its limit of onion connections, retry later")
	}
	if perAddr {
		if l.perAddr == nil {
			l.perAddr = make(map[netip.Prefix]int)
		}
		if l.perAddr[addr] >= s.opts.MaxConnsPerAddr {
			s.opts.Metrics.Refused(metrics.LimitConnectionsPerAddr)
			return nil, wire.Errorf(wire.CodeRateLimited, "too many connections from your address, retry later")
		}
		if network.IsValid() && l.perAddr[network] >= s.opts.MaxConnsPerNet {
			s.opts.Metrics.Refused(metrics.LimitConnectionsPerNet)
			return nil, wire.Errorf(wire.CodeRateLimited, "too many connections from your network, retry later")
		}
		l.perAddr[addr]++
		if network.IsValid() {
			l.perAddr[network]++
		}
	}
	l.total++
	if tor {
		l.tor++
	}
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.total--
		if tor {
			l.tor--
		}
		if perAddr {
			for _, k := range []netip.Prefix{addr, network} {
				if !k.IsValid() {
					continue
				}
				if l.perAddr[k]--; l.perAddr[k] <= 0 {
					delete(l.perAddr, k)
				}
			}
		}
	}, nil
}

// refuseConn answers the connection's hello with the refusal, so the
// client learns the code (both are retryable), then closes it. It waits
// for the client to close first, at most a second, because closing the
// connection at once could discard the Error record in flight.
func (s *Server) refuseConn(conn *quic.Conn, transport string, refusal *wire.Error) {
	timeout := min(s.opts.HandshakeTimeout, 2*time.Second)
	ctx, cancel := contextWithTimeout(conn, timeout)
	defer cancel()
	defer conn.CloseWithError(closeRefused, refusal.Detail)
	obsID := ""
	if s.opts.Observer != nil {
		// A refused connection has no ConnInfo ID: the record names it
		// r<n> from a count of its own.
		obsID = "r" + strconv.FormatUint(s.refusedIDs.Add(1), 10)
		s.observeConn(obsID, transport)
		defer s.observe(obsEvent{conn: obsID, ev: obsClose})
	}
	st, err := conn.AcceptStream(ctx)
	if err != nil {
		return
	}
	st.SetDeadline(time.Now().Add(timeout))
	r := wire.NewReader(st, padding.Control)
	m, err := r.ReadMessage()
	if err != nil {
		return
	}
	s.observeRequest(obsID, m, r.RecordSize()).fail(refusal)
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
