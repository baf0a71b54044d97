//go:build linux

package onion

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/quicprochat/qpc/tor"
)

// BenchmarkOnionNaglePattern replays, in raw TCP on one onion circuit, the
// write patterns of a qpc request and answer, to show what tor's Nagle
// (no TCP_NODELAY on any of its sockets) does to them without QUIC in the
// way (docs/tor.md, "Performance"). Both ends acknowledge every read at
// once, as tor/tunnel does. Per round, in turn: "echo", 2 KiB up, echoed
// as it arrives; "answer", 2 KiB up in one write and 512 bytes back 4 ms
// later (a Send's record, the fsync, the Sent); "ack+answer", the same
// with 50 bytes sent back at once first (the server's lone QUIC ACK of a
// two-packet request); "split+answer", as answer with the 2 KiB written
// in two pieces.
//
//	go test -run '^$' -bench OnionNaglePattern -benchtime 1x ./internal/onion
func BenchmarkOnionNaglePattern(b *testing.B) {
	nw, socks := network(b)
	dir := b.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t, err := tor.Start(ctx, tor.Config{DataDir: filepath.Join(dir, "tor"), Torrc: nw.Torrc()})
	if err != nil {
		b.Fatal(err)
	}
	defer t.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	const (
		echo = iota + 1
		answer
		ackAnswer
		splitAnswer
	)
	names := map[byte]string{echo: "echo", answer: "answer", ackAnswer: "ack+answer", splitAnswer: "split+answer"}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := quickAckReader{c}
				req := make([]byte, 1+2048)
				resp := make([]byte, 512)
				for {
					if _, err := io.ReadFull(r, req); err != nil {
						return
					}
					switch req[0] {
					case echo:
						c.Write(req[1:])
						continue
					case ackAnswer:
						c.Write(resp[:50])
					}
					time.Sleep(4 * time.Millisecond)
					c.Write(resp)
				}
			}()
		}
	}()
	key, _ := tor.LoadOrCreateOnionKey(filepath.Join(dir, tor.OnionKeyFile))
	svc, err := t.Publish(ctx, tor.OnionConfig{Key: key, VirtualPort: 8, Target: ln.Addr().String()})
	if err != nil {
		b.Fatal(err)
	}
	d := &tor.SOCKSDialer{Addr: socks, Isolation: "nagle-pattern"}
	conn, err := d.DialContext(ctx, "tcp", svc.ID+".onion:8")
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	r := quickAckReader{conn}
	req := make([]byte, 1+2048)
	buf := make([]byte, 2048)
	trip := func(mode byte) time.Duration {
		t0 := time.Now()
		req[0] = mode
		var err error
		if mode == splitAnswer {
			if _, err = conn.Write(req[:1454]); err == nil {
				_, err = conn.Write(req[1454:])
			}
		} else {
			_, err = conn.Write(req)
		}
		if err != nil {
			b.Fatal(err)
		}
		n := map[byte]int{echo: 2048, answer: 512, ackAnswer: 562, splitAnswer: 512}[mode]
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	modes := []byte{echo, answer, ackAnswer, splitAnswer}
	got := map[byte][]time.Duration{}
	b.ResetTimer()
	for range b.N {
		clear(got)
		for i := range 170 {
			for _, m := range modes {
				if dt := trip(m); i >= 20 {
					got[m] = append(got[m], dt)
				}
			}
		}
	}
	b.StopTimer()
	for _, m := range modes {
		s := got[m]
		slices.Sort(s)
		b.Logf("%-12s p10 %v p50 %v p90 %v", names[m], s[len(s)/10], s[len(s)/2], s[len(s)*9/10])
		b.ReportMetric(float64(s[len(s)/2])/float64(time.Millisecond), names[m]+"-p50-ms")
	}
}

// quickAckReader acknowledges every read at once (TCP_QUICKACK), as
// tor/tunnel does, so that only tor's side of each socket is measured.
type quickAckReader struct{ net.Conn }

func (q quickAckReader) Read(b []byte) (int, error) {
	n, err := q.Conn.Read(b)
	if sc, ok := q.Conn.(syscall.Conn); ok && n > 0 {
		if rc, err := sc.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) {
				syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
			})
		}
	}
	return n, err
}
