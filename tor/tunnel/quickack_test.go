//go:build linux

package tunnel

import (
	"encoding/binary"
	"io"
	"net"
	"slices"
	"testing"
	"time"
)

// TestNagleWriterNotDelayed plays tor's side of a stream: tor writes to
// the tunnel with Nagle's algorithm on (it never sets TCP_NODELAY on its
// SOCKS or onion-service streams) and passes a datagram on in pieces, as
// relay cells of at most 498 bytes arrive. Nagle holds each piece until
// the previous one is acknowledged, and the tunnel answers nothing before
// the whole datagram is in, so with delayed ACKs every such datagram
// waits for the kernel's delayed-ACK timer (40 ms on Linux). The test
// fails if the median round trip of a datagram written in two pieces is
// not far below that.
func TestNagleWriterNotDelayed(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    Options
		stalled bool
	}{
		{"quickack", Options{}, false},
		{"delayed-ack", Options{DelayedACK: true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p50 := nagleRoundTrip(t, tc.opts)
			t.Logf("median round trip %v", p50)
			if stalled := p50 >= 30*time.Millisecond; stalled != tc.stalled {
				t.Fatalf("median round trip of a datagram in two pieces from a Nagle writer: %v (delayed ACK stall expected: %v)", p50, tc.stalled)
			}
		})
	}
}

// nagleRoundTrip sends datagrams to a tunnel server in two writes from a
// socket with Nagle on, has the server send each back, and returns the
// median round trip.
func nagleRoundTrip(t *testing.T, opts Options) time.Duration {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc := Server(ln, opts)
	defer pc.Close()
	go func() {
		b := make([]byte, MaxDatagram)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			pc.WriteTo(b[:n], from)
		}
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.(*net.TCPConn).SetNoDelay(false); err != nil {
		t.Fatal(err)
	}
	const size, first, rounds = 1200, 500, 40
	frame := make([]byte, 2+size)
	binary.BigEndian.PutUint16(frame, size)
	back := make([]byte, len(frame))
	var rtts []time.Duration
	for i := range rounds {
		t0 := time.Now()
		if _, err := conn.Write(frame[:2+first]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // the next cell arrives a moment later
		if _, err := conn.Write(frame[2+first:]); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(conn, back); err != nil {
			t.Fatal(err)
		}
		if i >= 20 { // past the kernel's quick-ACK start of a connection
			rtts = append(rtts, time.Since(t0))
		}
	}
	slices.Sort(rtts)
	return rtts[len(rtts)/2]
}
