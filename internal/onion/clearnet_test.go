package onion

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/config"
	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/tor/tunnel"
)

// TestClearnetThroughTor: with TorOptions.Always a client reaches a
// clearnet server through a Tor exit, over the server's TCP tunnel
// listener on the same port number as its UDP one, and sends nothing
// over UDP.
func TestClearnetThroughTor(t *testing.T) {
	_, socks := network(t)
	dir := t.TempDir()
	id, err := server.CreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, config.StoreFile), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv, err := server.New(server.Options{
		Identity: id, Store: st, Authorizer: server.OpenAccess{},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	// One port for both: a free TCP port may be taken for UDP by another
	// process on the machine, so try a few.
	var tcp net.Listener
	var udp net.PacketConn
	for attempt := 0; ; attempt++ {
		tcp, err = net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := tcp.Addr().(*net.TCPAddr).Port
		if udp, err = net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			break
		}
		tcp.Close()
		if attempt == 20 {
			t.Fatal(err)
		}
	}
	tpc := tunnel.Server(tcp, tunnel.Options{})
	udpServed, tcpServed := make(chan error, 1), make(chan error, 1)
	go func() { udpServed <- srv.Serve(udp) }()
	go func() { tcpServed <- srv.ServeTransport(tpc, metrics.TransportTor) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-udpServed
		<-tcpServed
	}()
	addr := id.Address(tcp.Addr().String()).String()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := protocol.Dial(ctx, addr, protocol.Options{Tor: &protocol.TorOptions{SOCKS: socks, Always: true, ConnectTimeout: time.Minute}})
	if err != nil {
		t.Fatalf("dial %s through a Tor exit: %v", addr, err)
	}
	defer c.Close()
	if _, ok := c.LocalAddr().(*tunnel.Addr); !ok {
		t.Errorf("the connection's local address is %T %v, not a tunnel", c.LocalAddr(), c.LocalAddr())
	}
	mb, err := c.CreateMailbox(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	msg := protocol.NewMessageID()
	if _, err := c.Send(ctx, mb.SendID, msg, envelope("via an exit"), nil); err != nil {
		t.Fatal(err)
	}
	if msgs, _, err := c.Fetch(ctx, mb, 0, 1); err != nil || len(msgs) != 1 || msgs[0].ID != msg {
		t.Fatalf("fetch: %d, %v", len(msgs), err)
	}
	if tpc.Peers() != 1 {
		t.Errorf("the TCP tunnel listener has %d streams, want 1", tpc.Peers())
	}
}
