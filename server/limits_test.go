package server

import (
	"fmt"
	"net"
	"testing"

	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/wire"
)

func limiterServer() *Server {
	s := &Server{}
	s.opts.setLimitDefaults()
	return s
}

// TestAttackConnsPer48: a stranger holding an IPv6 /48 (65,536 /64s)
// connects from one /64 after another. Each /64 is under its own cap, but
// the /48 is capped as a whole; another /48 is still admitted, and a
// connection that leaves frees its slot.
func TestAttackConnsPer48(t *testing.T) {
	s := limiterServer()
	from := func(net48, net64 int) net.Addr {
		return &net.UDPAddr{IP: net.ParseIP(fmt.Sprintf("2001:db8:%x:%x::1", net48, net64)), Port: 4433}
	}
	var releases []func()
	for i := range s.opts.MaxConnsPerNet {
		release, refusal := s.admitFrom(from(1, i), metrics.TransportUDP)
		if refusal != nil {
			t.Fatalf("connection %d from its own /64: %v", i, refusal)
		}
		releases = append(releases, release)
	}
	_, refusal := s.admitFrom(from(1, 0xffff), metrics.TransportUDP)
	if refusal == nil || refusal.Code != wire.CodeRateLimited {
		t.Fatalf("connection %d from one /48: %v, want RATE_LIMITED", s.opts.MaxConnsPerNet+1, refusal)
	}
	if release, refusal := s.admitFrom(from(2, 0), metrics.TransportUDP); refusal != nil {
		t.Fatalf("another /48: %v", refusal)
	} else {
		release()
	}
	releases[0]()
	if _, refusal := s.admitFrom(from(1, 0xffff), metrics.TransportUDP); refusal != nil {
		t.Fatalf("after one left: %v", refusal)
	}
	for _, r := range releases[1:] {
		r()
	}
}

// TestAttackConnsPer64: the cap of one /64 (and one IPv4 address) still
// holds, below the /48's.
func TestAttackConnsPer64(t *testing.T) {
	s := limiterServer()
	for _, ip := range []string{"2001:db8:1:2::", "192.0.2.7"} {
		for i := range s.opts.MaxConnsPerAddr + 1 {
			a := &net.UDPAddr{IP: net.ParseIP(ip), Port: 1000 + i}
			if ip[0] == '2' {
				a.IP = net.ParseIP(fmt.Sprintf("%s%x", ip, i+1)) // another address, same /64
			}
			_, refusal := s.admitFrom(a, metrics.TransportUDP)
			if i < s.opts.MaxConnsPerAddr && refusal != nil {
				t.Fatalf("%s connection %d: %v", ip, i, refusal)
			}
			if i == s.opts.MaxConnsPerAddr && (refusal == nil || refusal.Code != wire.CodeRateLimited) {
				t.Fatalf("%s connection %d: %v, want RATE_LIMITED", ip, i, refusal)
			}
		}
	}
}
