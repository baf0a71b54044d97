package onion

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/config"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/tor"
	"github.com/quicprochat/qpc/tor/tunnel"
)

// BenchmarkOnionRoundTrip measures message round trips through the
// private Tor network, against a raw TCP echo over the same onion circuit
// (the same service, the same SOCKS isolation key, so tor reuses the
// rendezvous circuit): a Send answered by Sent, and 2 KiB echoed, 2 KiB
// being the bucket a small envelope is padded to.
//
//	go test -run '^$' -bench OnionRoundTrip -benchtime 1x ./internal/onion
func BenchmarkOnionRoundTrip(b *testing.B) {
	nw, socks := network(b)
	dir := b.TempDir()
	id, err := server.CreateIdentity(dir)
	if err != nil {
		b.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, config.StoreFile), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	srv, err := server.New(server.Options{Identity: id, Store: st, Authorizer: server.OpenAccess{},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st0, err := tor.Start(ctx, tor.Config{DataDir: filepath.Join(dir, "tor"), Torrc: nw.Torrc()})
	if err != nil {
		b.Fatal(err)
	}
	defer st0.Close()
	tl, _ := net.Listen("tcp", "127.0.0.1:0")
	echo, _ := net.Listen("tcp", "127.0.0.1:0")
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	key, _ := tor.LoadOrCreateOnionKey(filepath.Join(dir, tor.OnionKeyFile))
	svc, err := st0.Publish(ctx, tor.OnionConfig{Key: key, VirtualPort: 4433, Target: tl.Addr().String(),
		ExtraPorts: map[int]string{7: echo.Addr().String()}})
	if err != nil {
		b.Fatal(err)
	}
	pc := tunnel.Server(tl, tunnel.Options{})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(pc) }()
	defer func() {
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		srv.Shutdown(sctx)
		<-served
	}()
	addr := id.Address(svc.ID + ".onion:4433").String()

	const isolation = "bench-one-circuit"
	c, err := client.Dial(ctx, addr, client.Options{Tor: &client.TorOptions{SOCKS: socks, Isolation: isolation}})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	mb, err := c.CreateMailbox(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	d := &tor.SOCKSDialer{Addr: socks, Isolation: isolation}
	raw, err := d.DialContext(ctx, "tcp", svc.ID+".onion:7")
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()

	const samples = 300
	env := envelope("rtt")
	buf := make([]byte, 2048)
	// Health is a round trip without the store's fsync, which a Send
	// waits for (a send is acknowledged only once it is durable).
	var qpc, health, tcp []time.Duration
	b.ResetTimer()
	for range b.N {
		qpc, health, tcp = qpc[:0], health[:0], tcp[:0]
		for i := range samples + 20 { // the first 20 warm up
			t0 := time.Now()
			if _, err := c.Send(ctx, mb.SendID, client.NewMessageID(), env, nil); err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			if _, err := raw.Write(buf); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(raw, buf); err != nil {
				b.Fatal(err)
			}
			t2 := time.Now()
			if _, err := c.Health(ctx); err != nil {
				b.Fatal(err)
			}
			t3 := time.Now()
			if i >= 20 {
				qpc, tcp, health = append(qpc, t1.Sub(t0)), append(tcp, t2.Sub(t1)), append(health, t3.Sub(t2))
			}
		}
	}
	b.StopTimer()
	p := func(d []time.Duration, q float64) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[min(len(s)-1, int(q*float64(len(s))))]
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(p(qpc, 0.5)), "qpc-p50-ms")
	b.ReportMetric(ms(p(qpc, 0.99)), "qpc-p99-ms")
	b.ReportMetric(ms(p(tcp, 0.5)), "tcp-p50-ms")
	b.ReportMetric(ms(p(tcp, 0.99)), "tcp-p99-ms")
	b.ReportMetric(float64(p(qpc, 0.5))/float64(p(tcp, 0.5)), "ratio-p50")
	b.ReportMetric(float64(p(qpc, 0.99))/float64(p(tcp, 0.99)), "ratio-p99")
	b.ReportMetric(float64(p(health, 0.5))/float64(p(tcp, 0.5)), "health-ratio-p50")
	b.ReportMetric(float64(p(health, 0.99))/float64(p(tcp, 0.99)), "health-ratio-p99")
	b.Logf("%d samples: qpc send p50 %v p99 %v; qpc health p50 %v p99 %v; raw TCP echo p50 %v p99 %v", samples,
		p(qpc, 0.5), p(qpc, 0.99), p(health, 0.5), p(health, 0.99), p(tcp, 0.5), p(tcp, 0.99))
}
