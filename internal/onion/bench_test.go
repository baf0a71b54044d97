package onion

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/config"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/tor"
	"github.com/quicprochat/qpc/tor/tunnel"
)

// BenchmarkOnionRoundTrip measures message round trips through the
// private Tor network against a raw TCP echo over the same onion circuit
// (the same service, the same SOCKS isolation key, so tor reuses the
// rendezvous circuit): a Send answered by Sent, a Health (a round trip
// without the store's fsync), and 2 KiB echoed, 2 KiB being the bucket a
// small envelope is padded to.
//
// Three qpc connections share the circuit, each to a tunnel listener of
// its own on the same server: "qpc" is the client as shipped
// (protocol.Dial through Tor) and the tunnel as the server runs it; "old"
// runs both ends of its tunnel as before issue 22 (delayed ACKs kept,
// small datagrams written at once); "quickack" fixes only the first. A
// fourth client reaches the server over loopback UDP, without Tor: its
// Send is what the server itself adds to a round trip (above all the
// store's fsync). Every round runs each operation once, in a new random
// order, so that all see the same circuit and load.
//
//	go test -timeout 30m -run '^$' -bench OnionRoundTrip -benchtime 1x -count 5 ./internal/onion
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
	listen := func() net.Listener {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		return l
	}
	echo := listen()
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
	variants := []struct {
		name string
		port int
		opts tunnel.Options // both ends; "qpc" uses the defaults through protocol.Dial
		ln   net.Listener
		conn *protocol.Conn
	}{
		{name: "qpc", port: 4433},
		{name: "old", port: 4434, opts: tunnel.Options{DelayedACK: true, SmallHold: -1}},
		{name: "quickack", port: 4435, opts: tunnel.Options{SmallHold: -1}},
	}
	ports := map[int]string{7: echo.Addr().String()}
	for i := range variants {
		variants[i].ln = listen()
		ports[variants[i].port] = variants[i].ln.Addr().String()
	}
	key, _ := tor.LoadOrCreateOnionKey(filepath.Join(dir, tor.OnionKeyFile))
	svc, err := st0.Publish(ctx, tor.OnionConfig{Key: key, VirtualPort: 4433, Target: ports[4433], ExtraPorts: ports})
	if err != nil {
		b.Fatal(err)
	}
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan error, 1+len(variants))
	go func() { served <- srv.Serve(udp) }()
	for _, v := range variants {
		go func() { served <- srv.ServeTransport(tunnel.Server(v.ln, v.opts), "tor") }()
	}
	defer func() {
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		srv.Shutdown(sctx)
		for range 1 + len(variants) {
			<-served
		}
	}()

	const isolation = "bench-one-circuit"
	d := &tor.SOCKSDialer{Addr: socks, Isolation: isolation}
	for i := range variants {
		v := &variants[i]
		addr := id.Address(fmt.Sprintf("%s.onion:%d", svc.ID, v.port)).String()
		if v.name == "qpc" {
			v.conn, err = protocol.Dial(ctx, addr, protocol.Options{Tor: &protocol.TorOptions{SOCKS: socks, Isolation: isolation}})
		} else {
			var stream net.Conn
			stream, err = d.DialContext(ctx, "tcp", fmt.Sprintf("%s.onion:%d", svc.ID, v.port))
			if err != nil {
				b.Fatal(err)
			}
			pc := tunnel.Client(stream, v.opts)
			defer pc.Close()
			v.conn, err = protocol.Dial(ctx, addr, protocol.Options{PacketConn: pc, RemoteAddr: pc.RemoteAddr(), HandshakeTimeout: time.Minute})
		}
		if err != nil {
			b.Fatal(err)
		}
		defer v.conn.Close()
	}
	direct, err := protocol.Dial(ctx, id.Address(udp.LocalAddr().String()).String(), protocol.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer direct.Close()
	mb, err := direct.CreateMailbox(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	raw, err := d.DialContext(ctx, "tcp", svc.ID+".onion:7")
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()

	env := envelope("rtt")
	buf := make([]byte, 2048)
	type op struct {
		name string
		f    func() error
	}
	ops := []op{{"tcp echo", func() error {
		if _, err := raw.Write(buf); err != nil {
			return err
		}
		_, err := io.ReadFull(raw, buf)
		return err
	}}}
	send := func(c *protocol.Conn) func() error {
		return func() error { _, err := c.Send(ctx, mb.SendID, protocol.NewMessageID(), env, nil); return err }
	}
	health := func(c *protocol.Conn) func() error {
		return func() error { _, err := c.Health(ctx); return err }
	}
	for _, v := range variants {
		ops = append(ops, op{v.name + " send", send(v.conn)}, op{v.name + " health", health(v.conn)})
	}
	ops = append(ops, op{"udp send", send(direct)})

	const samples, warm = 150, 20
	got := make([][]time.Duration, len(ops))
	b.ResetTimer()
	for range b.N {
		for k := range got {
			got[k] = got[k][:0]
		}
		order := make([]int, len(ops))
		for k := range order {
			order[k] = k
		}
		for i := range samples + warm {
			// A new order each round, so that no operation always
			// follows the same other one on the circuit.
			rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			for _, k := range order {
				t0 := time.Now()
				if err := ops[k].f(); err != nil {
					b.Fatalf("%s: %v", ops[k].name, err)
				}
				if i >= warm {
					got[k] = append(got[k], time.Since(t0))
				}
			}
		}
	}
	b.StopTimer()
	idx := func(name string) int {
		return slices.IndexFunc(ops, func(o op) bool { return o.name == name })
	}
	p := func(name string, q float64) time.Duration {
		s := slices.Clone(got[idx(name)])
		slices.Sort(s)
		return s[min(len(s)-1, int(q*float64(len(s))))]
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	ratio := func(name string, q float64) float64 { return float64(p(name, q)) / float64(p("tcp echo", q)) }
	b.ReportMetric(ms(p("tcp echo", 0.5)), "tcp-p50-ms")
	b.ReportMetric(ms(p("qpc send", 0.5)), "qpc-p50-ms")
	b.ReportMetric(ms(p("udp send", 0.5)), "udp-send-p50-ms")
	for _, v := range variants {
		b.ReportMetric(ratio(v.name+" send", 0.5), v.name+"-send-ratio-p50")
		b.ReportMetric(ratio(v.name+" send", 0.99), v.name+"-send-ratio-p99")
		b.ReportMetric(ratio(v.name+" health", 0.5), v.name+"-health-ratio-p50")
	}
	var sum strings.Builder
	for _, o := range ops {
		fmt.Fprintf(&sum, "; %s %.1f / %.1f", o.name, ms(p(o.name, 0.5)), ms(p(o.name, 0.99)))
		if testing.Verbose() {
			var line []string
			for q := 0.1; q < 0.95; q += 0.1 {
				line = append(line, fmt.Sprintf("%.1f", ms(p(o.name, q))))
			}
			b.Logf("%-15s deciles (ms): %s", o.name, strings.Join(line, " "))
		}
	}
	b.Logf("%d samples each, p50 / p99 ms%s", samples, sum.String())
}
