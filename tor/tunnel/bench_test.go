package tunnel

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// The benchmarks compare QUIC over the tunnel with QUIC over plain UDP on
// loopback, in the same run:
//
//	go test -run '^$' -bench . -benchtime 3s ./tor/tunnel
//
// The ratio of the two is what the tunnel costs before Tor adds its own.

type benchPair struct {
	conn *quic.Conn
}

func udpPair(b *testing.B) *benchPair {
	spc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	str := &quic.Transport{Conn: spc}
	ln, err := str.Listen(serverTLS(b), &quic.Config{})
	if err != nil {
		b.Fatal(err)
	}
	go serveEcho(ln)
	cpc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctr := &quic.Transport{Conn: cpc}
	conn, err := ctr.Dial(context.Background(), spc.LocalAddr(), clientTLS(), &quic.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		conn.CloseWithError(0, "")
		ctr.Close()
		str.Close()
		cpc.Close()
		spc.Close()
	})
	return &benchPair{conn: conn}
}

func tunnelPair(b *testing.B) *benchPair { return tunnelPairWith(b, Options{}) }

// oldTunnelPair is the tunnel as it was before issue 22: delayed ACKs on
// its streams and no wait for small datagrams.
func oldTunnelPair(b *testing.B) *benchPair {
	return tunnelPairWith(b, Options{DelayedACK: true, SmallHold: -1})
}

func tunnelPairWith(b *testing.B, opts Options) *benchPair {
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	spc := Server(tl, opts)
	str := &quic.Transport{Conn: spc}
	ln, err := str.Listen(serverTLS(b), spc.QUICConfig(nil))
	if err != nil {
		b.Fatal(err)
	}
	go serveEcho(ln)
	tcp, err := net.Dial("tcp", tl.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	cpc := Client(tcp, opts)
	ctr := &quic.Transport{Conn: cpc}
	conn, err := ctr.Dial(context.Background(), cpc.RemoteAddr(), clientTLS(), cpc.QUICConfig(nil))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		conn.CloseWithError(0, "")
		ctr.Close()
		str.Close()
		cpc.Close()
		spc.Close()
	})
	return &benchPair{conn: conn}
}

// serveEcho answers each stream: a stream whose first byte is 'd' is
// drained (throughput), any other is echoed (message rate).
func serveEcho(ln *quic.Listener) {
	for {
		c, err := ln.Accept(context.Background())
		if err != nil {
			return
		}
		go func() {
			for {
				st, err := c.AcceptStream(context.Background())
				if err != nil {
					return
				}
				go func() {
					var first [1]byte
					if _, err := io.ReadFull(st, first[:]); err != nil {
						return
					}
					if first[0] == 'd' {
						io.Copy(io.Discard, st)
						st.Write([]byte{'k'})
					} else {
						st.Write(first[:])
						io.Copy(st, st)
					}
					st.Close()
				}()
			}
		}()
	}
}

func BenchmarkThroughput(b *testing.B) {
	for _, tc := range []struct {
		name string
		pair func(*testing.B) *benchPair
	}{{"udp", udpPair}, {"tunnel", tunnelPair}, {"tunnel-old", oldTunnelPair}, {"tunnel-qa", func(b *testing.B) *benchPair { return tunnelPairWith(b, Options{SmallHold: -1}) }}} {
		b.Run(tc.name, func(b *testing.B) {
			p := tc.pair(b)
			const chunk = 1 << 20
			buf := make([]byte, 64<<10)
			buf[0] = 'd'
			b.SetBytes(chunk)
			b.ResetTimer()
			for b.Loop() {
				st, err := p.conn.OpenStreamSync(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				for sent := 0; sent < chunk; sent += len(buf) {
					if _, err := st.Write(buf); err != nil {
						b.Fatal(err)
					}
				}
				st.Close()
				if _, err := io.ReadAll(st); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkMessageRate(b *testing.B) {
	for _, tc := range []struct {
		name string
		pair func(*testing.B) *benchPair
	}{{"udp", udpPair}, {"tunnel", tunnelPair}, {"tunnel-old", oldTunnelPair}, {"tunnel-qa", func(b *testing.B) *benchPair { return tunnelPairWith(b, Options{SmallHold: -1}) }}} {
		b.Run(tc.name, func(b *testing.B) {
			p := tc.pair(b)
			msg := make([]byte, 512) // one control bucket
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				got := make([]byte, len(msg))
				for pb.Next() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					st, err := p.conn.OpenStreamSync(ctx)
					cancel()
					if err != nil {
						b.Error(err)
						return
					}
					st.Write(msg)
					st.Close()
					if _, err := io.ReadFull(st, got); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
