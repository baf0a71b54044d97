package netrecord_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/lab/netrecord"
	"github.com/quicprochat/qpc/lab/record"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/wire"
)

// countingConn counts the datagrams the server itself reads and writes:
// a second count, at the server's socket, of what the relay recorded.
type countingConn struct {
	net.PacketConn
	inP, inB, outP, outB atomic.Int64
}

func (c *countingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := c.PacketConn.ReadFrom(b)
	if err == nil {
		c.inP.Add(1)
		c.inB.Add(int64(n))
	}
	return n, a, err
}

func (c *countingConn) WriteTo(b []byte, a net.Addr) (int, error) {
	n, err := c.PacketConn.WriteTo(b, a)
	if err == nil {
		c.outP.Add(1)
		c.outB.Add(int64(n))
	}
	return n, err
}

// TestLabNetworkRecord: a client reaches a real server through the relay,
// and the network record holds every datagram: its count and bytes per
// direction equal the relay's and, independently, what the server's own
// socket read and wrote; every line names the client's flow.
func TestLabNetworkRecord(t *testing.T) {
	dir := t.TempDir()
	if _, err := server.CreateIdentity(dir); err != nil {
		t.Fatal(err)
	}
	id, err := server.LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "qpc.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv, err := server.New(server.Options{Identity: id, Store: st, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	upc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cpc := &countingConn{PacketConn: upc}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(cpc) }()

	var buf bytes.Buffer
	w, err := record.NewNetworkWriter(&buf, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	relay, err := netrecord.Start("127.0.0.1:0", upc.LocalAddr().String(), w)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr := id.Address(relay.Addr().String()).String()
	c, err := protocol.Dial(ctx, addr, protocol.Options{})
	if err != nil {
		t.Fatalf("dial through the relay: %v", err)
	}
	// The client binds the wildcard address; the relay sees loopback.
	flowName := net.JoinHostPort("127.0.0.1", fmt.Sprint(c.LocalAddr().(*net.UDPAddr).Port))
	if _, err := c.Health(ctx); err != nil {
		t.Fatal(err)
	}
	mb, err := c.CreateMailbox(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := c.Send(ctx, mb.SendID, protocol.NewMessageID(), bytes.Repeat([]byte{byte(i)}, 100+1000*i), nil); err != nil {
			t.Fatal(err)
		}
	}
	msgs, _, err := c.Fetch(ctx, mb, 0, 10)
	if err != nil || len(msgs) != 5 {
		t.Fatalf("fetch through the relay: %d messages, %v", len(msgs), err)
	}
	ids := make([]wire.MessageID, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	if _, err := c.Ack(ctx, mb, ids); err != nil {
		t.Fatal(err)
	}
	c.Close()

	// Wait until both sides have sent their last packets (the close).
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := relay.Stats()
		if s.UpPackets == cpc.inP.Load() && s.DownPackets == cpc.outP.Load() && s.UpPackets > 0 {
			time.Sleep(200 * time.Millisecond)
			if s == relay.Stats() {
				break
			}
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay %+v, server read %d and wrote %d datagrams", s, cpc.inP.Load(), cpc.outP.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := relay.Close(); err != nil {
		t.Fatal(err)
	}
	shutdown, cancelShutdown := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelShutdown()
	srv.Shutdown(shutdown)
	<-served

	_, ps, err := record.ReadNetwork(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var upP, upB, downP, downB int64
	for _, p := range ps {
		if p.Flow != flowName {
			t.Fatalf("packet of flow %q, the only client is %q", p.Flow, flowName)
		}
		if p.Dir == record.DirUp {
			upP, upB = upP+1, upB+int64(p.Len)
		} else {
			downP, downB = downP+1, downB+int64(p.Len)
		}
	}
	got := fmt.Sprintf("up %d/%d down %d/%d", upP, upB, downP, downB)
	s := relay.Stats()
	if relayed := fmt.Sprintf("up %d/%d down %d/%d", s.UpPackets, s.UpBytes, s.DownPackets, s.DownBytes); got != relayed {
		t.Errorf("record %s, relay %s", got, relayed)
	}
	if seen := fmt.Sprintf("up %d/%d down %d/%d", cpc.inP.Load(), cpc.inB.Load(), cpc.outP.Load(), cpc.outB.Load()); got != seen {
		t.Errorf("record %s, server socket %s", got, seen)
	}
	if s.Flows != 1 {
		t.Errorf("%d flows, one client", s.Flows)
	}
	t.Logf("network record: %s (packets/bytes)", got)
}
