package netrecord_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/wire"
)

// BenchmarkObserverRequestPath measures the server's request path with
// the observer record off and on (server/observer.go), over a real store
// and QUIC on loopback: Health (the cheapest request, where the record's
// share is largest) and a Send with a Fetch and Ack of it.
//
//	go test ./lab/netrecord -run '^$' -bench ObserverRequestPath -benchtime 2000x
func BenchmarkObserverRequestPath(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			c, cleanup := benchServer(b, on)
			defer cleanup()
			ctx := context.Background()
			b.Run("Health", func(b *testing.B) {
				for b.Loop() {
					if _, err := c.Health(ctx); err != nil {
						b.Fatal(err)
					}
				}
			})
			mb, err := c.CreateMailbox(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			env := make([]byte, 700)
			b.Run("SendFetchAck", func(b *testing.B) {
				for b.Loop() {
					if _, err := c.Send(ctx, mb.SendID, protocol.NewMessageID(), env, nil); err != nil {
						b.Fatal(err)
					}
					msgs, _, err := c.Fetch(ctx, mb, 0, 1)
					if err != nil || len(msgs) != 1 {
						b.Fatal(len(msgs), err)
					}
					if _, err := c.Ack(ctx, mb, []wire.MessageID{msgs[0].ID}); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

func benchServer(b *testing.B, observe bool) (*protocol.Conn, func()) {
	dir := b.TempDir()
	if _, err := server.CreateIdentity(dir); err != nil {
		b.Fatal(err)
	}
	id, err := server.LoadIdentity(dir)
	if err != nil {
		b.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "qpc.db"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	opts := server.Options{Identity: id, Store: st, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RequestRate: 1e9, RequestBurst: 1 << 30}
	var f *os.File
	if observe {
		if f, err = os.Create(filepath.Join(dir, "observer.jsonl")); err != nil {
			b.Fatal(err)
		}
		if opts.Observer, err = server.NewObserver(f); err != nil {
			b.Fatal(err)
		}
	}
	srv, err := server.New(opts)
	if err != nil {
		b.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(pc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := protocol.Dial(ctx, id.Address(pc.LocalAddr().String()).String(), protocol.Options{})
	if err != nil {
		b.Fatal(err)
	}
	return c, func() {
		c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		st.Close()
		if f != nil {
			f.Close()
		}
	}
}
