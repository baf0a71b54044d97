package tunnel

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

const alpn = "tunnel-test"

func serverTLS(t testing.TB) *tls.Config {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: priv}}, NextProtos: []string{alpn}}
}

func clientTLS() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, NextProtos: []string{alpn}}
}

// echoServer serves QUIC over a tunnel on 127.0.0.1 and echoes every
// stream. It returns the TCP address and the server PacketConn.
func echoServer(t testing.TB, opts Options) (string, *PacketConn, *quic.Transport) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc := Server(ln, opts)
	tr := &quic.Transport{Conn: pc}
	ql, err := tr.Listen(serverTLS(t), pc.QUICConfig(&quic.Config{MaxIdleTimeout: 10 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ql.Accept(context.Background())
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
						io.Copy(st, st)
						st.Close()
					}()
				}
			}()
		}
	}()
	t.Cleanup(func() {
		closeWithin(t, "server transport", 5*time.Second, tr.Close)
		closeWithin(t, "server tunnel", 5*time.Second, pc.Close)
	})
	return ln.Addr().String(), pc, tr
}

type tunnelClient struct {
	tcp  net.Conn
	pc   *PacketConn
	tr   *quic.Transport
	conn *quic.Conn
}

func dialClient(t testing.TB, addr string) *tunnelClient {
	t.Helper()
	tcp, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	pc := Client(tcp, Options{})
	tr := &quic.Transport{Conn: pc}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := tr.Dial(ctx, pc.RemoteAddr(), clientTLS(), pc.QUICConfig(&quic.Config{MaxIdleTimeout: 10 * time.Second}))
	if err != nil {
		t.Fatalf("dial over the tunnel: %v", err)
	}
	c := &tunnelClient{tcp: tcp, pc: pc, tr: tr, conn: conn}
	t.Cleanup(c.close)
	return c
}

func (c *tunnelClient) close() {
	c.conn.CloseWithError(0, "")
	c.tr.Close()
	c.pc.Close()
}

// echo sends n random bytes on a new stream and checks they come back.
func (c *tunnelClient) echo(ctx context.Context, n int) error {
	st, err := c.conn.OpenStreamSync(ctx)
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		st.SetDeadline(dl)
	}
	want := make([]byte, n)
	rand.Read(want)
	errc := make(chan error, 1)
	go func() {
		_, err := st.Write(want)
		st.Close()
		errc <- err
	}()
	got, err := io.ReadAll(st)
	if err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if err := <-errc; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("echo of %d bytes came back as %d different bytes", n, len(got))
	}
	return nil
}

func closeWithin(t testing.TB, what string, d time.Duration, f func() error) {
	t.Helper()
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Errorf("%s: Close did not return within %v", what, d)
	}
}

func TestManyClientsOneTransport(t *testing.T) {
	addr, spc, _ := echoServer(t, Options{})
	const clients = 24
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dialClient(t, addr)
			// Small and large payloads: the large ones span many
			// datagrams and exercise flow control across the stream.
			for _, n := range []int{1, 1000, 64 << 10, 256 << 10} {
				if err := c.echo(ctx, n+i); err != nil {
					errs <- fmt.Errorf("client %d, %d bytes: %w", i, n+i, err)
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
	if got := spc.Peers(); got != clients {
		t.Errorf("server has %d streams, want %d (one per client)", got, clients)
	}
}

func TestDisconnectMidStreamLeavesOthersAlone(t *testing.T) {
	addr, spc, _ := echoServer(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	victim := dialClient(t, addr)
	others := []*tunnelClient{dialClient(t, addr), dialClient(t, addr), dialClient(t, addr)}

	// The victim is in the middle of a large transfer when its stream is
	// cut without any QUIC close: what a dropped Tor circuit looks like.
	st, err := victim.conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 32<<10)
		for {
			if _, err := st.Write(buf); err != nil {
				return
			}
		}
	}()
	go io.Copy(io.Discard, st)

	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i, c := range others {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				if err := c.echo(ctx, 16<<10); err != nil {
					errs <- fmt.Errorf("client %d, round %d: %w", i, j, err)
					return
				}
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	victim.tcp.(*net.TCPConn).SetLinger(0) // RST, not FIN
	victim.tcp.Close()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// The victim's QUIC connection learns at once: its reads fail.
	select {
	case <-victim.conn.Context().Done():
	case <-time.After(5 * time.Second):
		t.Error("the victim's QUIC connection outlived its stream by 5 s")
	}
	// The server forgot the victim's stream and still accepts new ones.
	deadline := time.Now().Add(5 * time.Second)
	for spc.Peers() != len(others) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := spc.Peers(); got != len(others) {
		t.Errorf("server has %d streams after the disconnect, want %d", got, len(others))
	}
	if err := dialClient(t, addr).echo(ctx, 1000); err != nil {
		t.Errorf("a new client after the disconnect: %v", err)
	}
}

func TestCloseNeverHangs(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc := Server(ln, Options{QueueLen: 4})
	// A peer that never reads: its stream's writer blocks once the TCP
	// buffers fill.
	stuck, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	frame := make([]byte, 2+10)
	binary.BigEndian.PutUint16(frame, 10)
	stuck.Write(frame)
	buf := make([]byte, MaxDatagram)
	_, from, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, MaxDatagram)
	for range 10000 { // ~14 MB: far more than the socket buffers hold
		if _, err := pc.WriteTo(big, from); err != nil {
			t.Fatalf("write to a slow peer must not fail: %v", err)
		}
	}
	// A ReadFrom blocked with no deadline.
	readDone := make(chan error, 1)
	go func() {
		_, _, err := pc.ReadFrom(buf)
		readDone <- err
	}()
	time.Sleep(20 * time.Millisecond)
	closeWithin(t, "server with a stuck peer", 2*time.Second, pc.Close)
	select {
	case err := <-readDone:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("ReadFrom after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Error("ReadFrom still blocked after Close")
	}
	closeWithin(t, "second Close", time.Second, pc.Close)

	// A client whose server never answers.
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln2.Close()
	c, err := net.Dial("tcp", ln2.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cpc := Client(c, Options{})
	go cpc.ReadFrom(buf)
	closeWithin(t, "client", 2*time.Second, cpc.Close)
}

func TestTransportCloseOverTunnel(t *testing.T) {
	// quic.Transport.Close sets a read deadline and waits for its read
	// loop: it hangs unless the deadline unblocks ReadFrom.
	addr, _, tr := echoServer(t, Options{})
	c := dialClient(t, addr)
	if err := c.echo(context.Background(), 100); err != nil {
		t.Fatal(err)
	}
	closeWithin(t, "quic.Transport over the tunnel", 5*time.Second, tr.Close)
	closeWithin(t, "client quic.Transport", 5*time.Second, c.tr.Close)
}

func TestReadDeadline(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	pc := Server(ln, Options{})
	defer pc.Close()
	pc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	_, _, err := pc.ReadFrom(make([]byte, 10))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadFrom past the deadline: %v, want a timeout", err)
	}
	if d := time.Since(start); d < 40*time.Millisecond || d > time.Second {
		t.Errorf("deadline fired after %v, want ~50ms", d)
	}
	// A deadline in the past fails at once; clearing it blocks again.
	pc.SetReadDeadline(time.Now().Add(-time.Second))
	if _, _, err := pc.ReadFrom(nil); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("past deadline: %v", err)
	}
	pc.SetReadDeadline(time.Time{})
	got := make(chan error, 1)
	go func() { _, _, err := pc.ReadFrom(make([]byte, 10)); got <- err }()
	select {
	case err := <-got:
		t.Fatalf("ReadFrom returned %v with the deadline cleared", err)
	case <-time.After(50 * time.Millisecond):
	}
	// Setting a deadline unblocks a read already waiting.
	pc.SetReadDeadline(time.Now())
	select {
	case err := <-got:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("pending read after SetReadDeadline(now): %v", err)
		}
	case <-time.After(time.Second):
		t.Fatal("SetReadDeadline did not unblock a pending ReadFrom")
	}
}

func TestOversizeDatagramsRejected(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	pc := Server(ln, Options{MaxDatagram: 1200})
	defer pc.Close()
	good, _ := net.Dial("tcp", ln.Addr().String())
	defer good.Close()
	bad, _ := net.Dial("tcp", ln.Addr().String())
	defer bad.Close()

	frame := func(n int) []byte {
		b := make([]byte, 2+n)
		binary.BigEndian.PutUint16(b, uint16(n))
		return b
	}
	good.Write(frame(1200))
	buf := make([]byte, 2000)
	n, goodAddr, err := pc.ReadFrom(buf)
	if err != nil || n != 1200 {
		t.Fatalf("datagram at the limit: %d bytes, %v", n, err)
	}
	// Sending: one byte over the limit is refused, at the limit accepted.
	if _, err := pc.WriteTo(make([]byte, 1201), goodAddr); !errors.Is(err, ErrTooLarge) {
		t.Errorf("WriteTo 1201 bytes with a 1200 limit: %v, want ErrTooLarge", err)
	}
	if _, err := pc.WriteTo(make([]byte, 1200), goodAddr); err != nil {
		t.Errorf("WriteTo at the limit: %v", err)
	}
	// Receiving: a peer that announces 1201 bytes loses its stream.
	bad.Write(frame(1201))
	bad.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(bad); err != nil {
		t.Errorf("oversize sender: stream ended with %v, want a close", err)
	}
	// The other peer is untouched, and nothing oversize was delivered.
	good.Write(frame(7))
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := pc.ReadFrom(buf)
	if err != nil || n != 7 || from.String() != goodAddr.String() {
		t.Errorf("after the oversize peer: %d bytes from %v, %v; want 7 from %v", n, from, err, goodAddr)
	}
	if pc.Peers() != 1 {
		t.Errorf("%d streams, want 1", pc.Peers())
	}
	// The limit itself cannot exceed what the prefix can say.
	big := Server(ln, Options{MaxDatagram: 1 << 20})
	if big.opts.MaxDatagram != MaxDatagram {
		t.Errorf("MaxDatagram 1 MiB was kept as %d", big.opts.MaxDatagram)
	}
	big.Close()
}

func TestClientStreamEnd(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	c, _ := net.Dial("tcp", ln.Addr().String())
	s, _ := ln.Accept()
	pc := Client(c, Options{})
	defer pc.Close()
	s.Write([]byte{0, 3, 'a', 'b', 'c'})
	s.Close()
	buf := make([]byte, 10)
	// The datagram sent before the end is still read, then the end.
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _, err := pc.ReadFrom(buf); err != nil || string(buf[:n]) != "abc" {
		t.Fatalf("read before the end: %q, %v", buf[:n], err)
	}
	if _, _, err := pc.ReadFrom(buf); !errors.Is(err, ErrStreamClosed) {
		t.Fatalf("read after the end: %v, want ErrStreamClosed", err)
	}
	if _, err := pc.WriteTo([]byte("x"), pc.RemoteAddr()); !errors.Is(err, ErrStreamClosed) {
		t.Errorf("write after the end: %v, want ErrStreamClosed", err)
	}
}

func TestTooManyPeers(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	pc := Server(ln, Options{MaxPeers: 2})
	defer pc.Close()
	var conns []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
		c.Write([]byte{0, 1, 'x'})
	}
	buf := make([]byte, 10)
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for range 2 {
		if _, _, err := pc.ReadFrom(buf); err != nil {
			t.Fatal(err)
		}
	}
	conns[2].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conns[2].Read(buf); err == nil {
		t.Error("third stream beyond MaxPeers 2 was kept open")
	}
	if pc.Peers() != 2 {
		t.Errorf("%d streams, want 2", pc.Peers())
	}
}

// TestSmallDatagramsShareAWrite: an ACK written after a quiet spell waits
// for the answer that follows it a few milliseconds later, so that both
// reach tor in one write (one relay cell run), instead of the answer
// being held at a Nagle relay behind the lone ACK's cell.
func TestSmallDatagramsShareAWrite(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var opts Options
	if opts.setDefaults(); opts.SmallHold <= 0 {
		t.Fatalf("SmallHold is off by default (%v)", opts.SmallHold)
	}
	// A longer hold than the default keeps the test independent of how
	// late a loaded machine wakes the sleeps below.
	pc := Server(ln, Options{SmallHold: 250 * time.Millisecond})
	defer pc.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte{0, 3, 'h', 'i', '!'}); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 64)
	_, from, err := pc.ReadFrom(b)
	if err != nil {
		t.Fatal(err)
	}
	const ack, answer = 30, 600
	got := make(chan int, 1)
	go func() {
		buf := make([]byte, 4096)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _ := conn.Read(buf) // the first segment that arrives
		got <- n
	}()
	time.Sleep(5 * time.Millisecond) // the reader is waiting
	pc.WriteTo(make([]byte, ack), from)
	time.Sleep(5 * time.Millisecond) // the server's fsync
	pc.WriteTo(make([]byte, answer), from)
	if n := <-got; n != 2+ack+2+answer {
		t.Fatalf("first read from the tunnel: %d bytes, want the ACK and the answer together (%d)", n, 2+ack+2+answer)
	}
}
