package main

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/wire"
)

// TestAttackTorFlagNeverDialsDirect plays whoever hands a --tor user an
// address with no onion endpoint (a contact's invite stripped of its
// onion, a pasted clearnet address): `qpc --tor` says "connect through
// Tor", so the client must go to Tor's SOCKS port and never send a
// datagram to the server's address itself, which would tell the server
// (and every observer on the way) the user's own address. The "server"
// is a UDP socket that records what reaches it; the SOCKS port one that
// records connections (and refuses them: the dial fails, closed, which
// is what --tor must do without a way through Tor).
func TestAttackTorFlagNeverDialsDirect(t *testing.T) {
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	direct := make(chan struct{}, 1)
	go func() {
		var b [2048]byte
		if _, _, err := udp.ReadFrom(b[:]); err == nil {
			direct <- struct{}{}
		}
	}()
	socks, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer socks.Close()
	viaTor := make(chan struct{}, 1)
	go func() {
		for {
			c, err := socks.Accept()
			if err != nil {
				return
			}
			select {
			case viaTor <- struct{}{}:
			default:
			}
			io.CopyN(io.Discard, c, 3) // the SOCKS greeting, then refuse
			c.Close()
		}
	}()

	c := &cli{tor: true, torSOCKS: socks.Addr().String(), stderr: io.Discard, getenv: func(string) string { return "" }}
	opts := c.options(nil).Dial
	opts.HandshakeTimeout = 5 * time.Second
	opts.MaxAttempts = 1
	opts.Tor.ConnectTimeout = 5 * time.Second
	addr := wire.Address{Host: udp.LocalAddr().String()}.String()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := protocol.Dial(ctx, addr, opts)
	if err == nil {
		// Dial may connect lazily: make it dial.
		_, err = conn.Health(ctx)
		conn.Close()
	}
	if err == nil {
		t.Fatal("a dial through a SOCKS port that refuses everything succeeded")
	}
	select {
	case <-direct:
		t.Fatal("qpc --tor sent a datagram straight to a clearnet server's address")
	default:
	}
	select {
	case <-viaTor:
	default:
		t.Fatalf("qpc --tor never went to Tor's SOCKS port (dial: %v)", err)
	}
}
