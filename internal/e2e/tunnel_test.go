package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/config"
	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/tor/tunnel"
)

// recordingDialer dials plain TCP (the tunnel without Tor) and keeps the
// streams, so a test can cut one as a dropped circuit would.
type recordingDialer struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (d *recordingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err == nil {
		d.mu.Lock()
		d.conns = append(d.conns, c)
		d.mu.Unlock()
	}
	return c, err
}

func (d *recordingDialer) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.conns)
}

// TestTunnelTransport runs the whole client over the TCP tunnel (what
// Tor carries) against a server's tunnel listener: several clients at
// once, and one whose stream is cut and that redials on a new stream.
func TestTunnelTransport(t *testing.T) {
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
	srv, err := server.New(server.Options{Identity: id, Store: st, Authorizer: server.OpenAccess{},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc := tunnel.Server(ln, tunnel.Options{})
	served := make(chan error, 1)
	go func() { served <- srv.ServeTransport(pc, metrics.TransportTor) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	addr := id.Address(ln.Addr().String()).String()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tunnelOpts := func(d *recordingDialer) protocol.Options {
		return protocol.Options{Tor: &protocol.TorOptions{Always: true, Dialer: d}, BaseBackoff: 10 * time.Millisecond}
	}

	const clients = 8
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := protocol.Dial(ctx, addr, tunnelOpts(&recordingDialer{}))
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			mb, err := c.CreateMailbox(ctx, nil)
			if err != nil {
				errs <- err
				return
			}
			sub, err := c.Subscribe(ctx, mb, 0)
			if err != nil {
				errs <- err
				return
			}
			defer sub.Close()
			for j := range 5 {
				if _, err := c.Send(ctx, mb.SendID, protocol.NewMessageID(), envelope(i*10+j), nil); err != nil {
					errs <- fmt.Errorf("client %d send %d: %w", i, j, err)
					return
				}
			}
			for j := range 5 {
				select {
				case <-sub.C:
				case <-time.After(10 * time.Second):
					errs <- fmt.Errorf("client %d: push %d missing", i, j)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// A cut stream (a dropped circuit): the QUIC connection on it ends at
	// once, and the next request redials on a new stream.
	d := &recordingDialer{}
	c, err := protocol.Dial(ctx, addr, tunnelOpts(d))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mb, err := c.CreateMailbox(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	d.conns[0].Close()
	d.mu.Unlock()
	time.Sleep(50 * time.Millisecond)
	if _, err := c.Send(ctx, mb.SendID, protocol.NewMessageID(), envelope(99), nil); err != nil {
		t.Fatalf("send after the stream was cut: %v", err)
	}
	if d.count() != 2 {
		t.Errorf("%d streams dialled, want 2 (one redial)", d.count())
	}
	if msgs, _, err := c.Fetch(ctx, mb, 0, 5); err != nil || len(msgs) != 1 {
		t.Errorf("fetch after the redial: %d, %v", len(msgs), err)
	}
}
