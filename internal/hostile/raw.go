package hostile

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/wire"
)

// RawConn speaks records to the server directly, as a stranger's own
// code would: no client SDK, any record it likes.
type RawConn struct {
	QUIC   *quic.Conn
	Policy padding.Policy
}

// Raw dials the server through Addr(tag) and runs the version handshake.
func (h *Server) Raw(t testing.TB, tag string) *RawConn {
	t.Helper()
	return h.RawFrom(t, tag, nil)
}

// RawFrom is Raw from the source address from (nil: the system's
// choice). Any address of 127.0.0.0/8 works on Linux without setup, so a
// test can play a stranger with many source addresses, which the
// server's per-address caps count apart.
func (h *Server) RawFrom(t testing.TB, tag string, from net.IP) *RawConn {
	t.Helper()
	return DialRaw(t, h.Addr(tag), from)
}

// DialRaw is RawFrom for a server given by its qpc:// address, for a
// stranger that runs in a process of its own.
func DialRaw(t testing.TB, addr string, from net.IP) *RawConn {
	t.Helper()
	a, err := wire.ParseAddress(addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tlsConf := &tls.Config{
		InsecureSkipVerify: true, NextProtos: wire.ALPNs(wire.SupportedVersions()), MinVersion: tls.VersionTLS13,
	}
	var qc *quic.Conn
	if from == nil {
		qc, err = quic.DialAddr(ctx, a.Host, tlsConf, nil)
	} else {
		var pc *net.UDPConn
		pc, err = net.ListenUDP("udp", &net.UDPAddr{IP: from})
		if err != nil {
			t.Fatal(err)
		}
		tr := &quic.Transport{Conn: pc}
		t.Cleanup(func() { tr.Close(); pc.Close() })
		var to *net.UDPAddr
		if to, err = net.ResolveUDPAddr("udp", a.Host); err == nil {
			qc, err = tr.Dial(ctx, to, tlsConf, nil)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	r := &RawConn{QUIC: qc, Policy: padding.Control}
	m, err := r.RoundTrip(&wire.ClientHello{Versions: wire.SupportedVersions()})
	if err != nil {
		t.Fatal(err)
	}
	hello, ok := m.(*wire.ServerHello)
	if !ok {
		t.Fatalf("raw hello: got %T", m)
	}
	r.Policy = hello.Policy
	return r
}

// RoundTrip sends m on a stream of its own and returns the first record of
// the answer.
func (r *RawConn) RoundTrip(m wire.Message) (wire.Message, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := r.QUIC.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	st.SetDeadline(time.Now().Add(5 * time.Second))
	if err := wire.WriteMessage(st, r.Policy, m); err != nil {
		return nil, fmt.Errorf("write: %w", err)
	}
	st.Close()
	return wire.NewReader(st, r.Policy).ReadMessage()
}
