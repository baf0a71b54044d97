package tor

import (
	"bytes"
	"context"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// socksOnce answers one SOCKS5 CONNECT with username/password
// authentication (RFC 1928 §3-6, RFC 1929 §2) and then echoes, as tor's
// SOCKS port would with a stream to an echo service. It reports the
// username it was sent.
func socksOnce(t *testing.T, ln net.Listener, user chan<- string) {
	c, err := ln.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 512)
	read := func(n int) []byte {
		if _, err := io.ReadFull(c, b[:n]); err != nil {
			t.Errorf("socks server: %v", err)
			return nil
		}
		return b[:n]
	}
	hello := read(2) // VER NMETHODS
	if hello == nil {
		return
	}
	read(int(hello[1]))
	c.Write([]byte{5, 2}) // username/password
	auth := read(2)       // VER ULEN
	if auth == nil {
		return
	}
	user <- string(read(int(auth[1])))
	plen := read(1) // PLEN, then PASSWD
	if plen == nil {
		return
	}
	read(int(plen[0]))
	c.Write([]byte{1, 0})
	req := read(5) // VER CMD RSV ATYP LEN (a domain name)
	if req == nil {
		return
	}
	read(int(req[4]) + 2)
	c.Write([]byte{5, 0, 0, 1, 127, 0, 0, 1, 0, 80})
	io.Copy(c, c)
}

// TestSOCKSStreamIsPlainTCP: DialContext returns the TCP connection itself
// once the SOCKS handshake is done, not a wrapper around it, so that
// tor/tunnel reaches its socket (SyscallConn) to turn off delayed ACKs,
// and the stream works.
func TestSOCKSStreamIsPlainTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	user := make(chan string, 1)
	go socksOnce(t, ln, user)
	d := &SOCKSDialer{Addr: ln.Addr().String(), Isolation: "key-1"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", "abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrstuvwx.onion:4433")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := <-user; got != "key-1" {
		t.Errorf("SOCKS username %q, want the isolation key", got)
	}
	if _, ok := c.(syscall.Conn); !ok {
		t.Errorf("DialContext returned %T, which hides its socket", c)
	}
	msg := []byte("through the stream")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo: %q, %v", got, err)
	}
}
