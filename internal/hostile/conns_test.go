package hostile_test

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/wire"
)

// helloAt dials a QUIC address and runs the version handshake; it returns
// the connection and the server's answer (ServerHello or Error).
func helloAt(t *testing.T, host string) (*quic.Conn, wire.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	qc, err := quic.DialAddr(ctx, host, &tls.Config{
		InsecureSkipVerify: true, NextProtos: wire.ALPNs(wire.SupportedVersions()), MinVersion: tls.VersionTLS13,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	st, err := qc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.SetDeadline(time.Now().Add(5 * time.Second))
	if err := wire.WriteMessage(st, padding.Control, &wire.ClientHello{Versions: wire.SupportedVersions()}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	m, err := wire.NewReader(st, padding.Control).ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	return qc, m
}

// TestAttackOnionFlood: every client of the onion service arrives from the
// tunnel's one address, so the per-address caps cannot tell a flood from
// many users. A stranger opening onion connections until refused gets at
// most half the server's slots (MaxConnsTor, default MaxConns/2), and a
// clearnet client still connects.
func TestAttackOnionFlood(t *testing.T) {
	const maxConns = 8
	h := hostile.Start(t, hostile.Options{Server: func(o *server.Options) { o.MaxConns = maxConns }})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go h.Srv.ServeTransport(pc, metrics.TransportTor)
	onion := pc.LocalAddr().String()
	admitted := 0
	for range maxConns {
		_, m := helloAt(t, onion)
		if _, ok := m.(*wire.ServerHello); ok {
			admitted++
			continue
		}
		if e, ok := m.(*wire.ErrorMessage); !ok || e.Code != wire.CodeUnavailable {
			t.Fatalf("onion connection %d answered %T %v, want UNAVAILABLE", admitted+1, m, m)
		}
		break
	}
	if admitted != maxConns/2 {
		t.Fatalf("the onion flood took %d of %d connection slots, want %d", admitted, maxConns, maxConns/2)
	}
	clear := h.Raw(t, "clearnet") // fails the test if refused
	if m, err := clear.RoundTrip(&wire.Health{}); err != nil {
		t.Fatalf("clearnet client during the onion flood: %v", err)
	} else if _, ok := m.(*wire.HealthStatus); !ok {
		t.Fatalf("clearnet client during the onion flood: %T %v", m, m)
	}
}
