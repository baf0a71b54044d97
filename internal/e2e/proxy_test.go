package e2e

import (
	"bytes"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/wire"
)

// udpProxy relays datagrams between clients and a server on 127.0.0.1 and
// can black-hole the server's replies, to lose an acknowledgement after
// the server has acted on a request.
type udpProxy struct {
	front    *net.UDPConn
	target   *net.UDPAddr
	dropDown atomic.Bool // drop server-to-client datagrams
	dropped  atomic.Int64
	delay    atomic.Int64 // one-way delay added to every datagram, each way (ns)

	mu    sync.Mutex
	backs map[string]*net.UDPConn
}

func newUDPProxy(t *testing.T, target string) *udpProxy {
	t.Helper()
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	raddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	p := &udpProxy{front: front, target: raddr, backs: make(map[string]*net.UDPConn)}
	go p.run()
	t.Cleanup(p.close)
	return p
}

func (p *udpProxy) addr() string { return p.front.LocalAddr().String() }

func (p *udpProxy) run() {
	buf := make([]byte, 65536)
	for {
		n, from, err := p.front.ReadFromUDP(buf)
		if err != nil {
			return
		}
		back := p.backFor(from)
		if back != nil {
			p.forward(buf[:n], func(b []byte) { back.Write(b) })
		}
	}
}

func (p *udpProxy) backFor(client *net.UDPAddr) *net.UDPConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b, ok := p.backs[client.String()]; ok {
		return b
	}
	b, err := net.DialUDP("udp", nil, p.target)
	if err != nil {
		return nil
	}
	p.backs[client.String()] = b
	go func() {
		buf := make([]byte, 65536)
		for {
			n, err := b.Read(buf)
			if err != nil {
				return
			}
			if p.dropDown.Load() {
				p.dropped.Add(1)
				continue
			}
			p.forward(buf[:n], func(b []byte) { p.front.WriteToUDP(b, client) })
		}
	}()
	return b
}

// forward passes b on, after the proxy's delay if it has one.
func (p *udpProxy) forward(b []byte, write func([]byte)) {
	d := time.Duration(p.delay.Load())
	if d <= 0 {
		write(b)
		return
	}
	b = bytes.Clone(b)
	time.AfterFunc(d, func() { write(b) })
}

func (p *udpProxy) close() {
	p.front.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range p.backs {
		b.Close()
	}
}

// TestRetryAfterLostAck: the server stores a send but its reply is lost;
// the client times out, redials and retries with the same message ID; the
// server acknowledges the retry as a duplicate and the mailbox holds one
// copy.
func TestRetryAfterLostAck(t *testing.T) {
	ts := startServer(t, nil)
	ctx := ctxT(t)
	proxy := newUDPProxy(t, ts.host)
	a, _ := wire.ParseAddress(ts.addr)
	a.Host = proxy.addr()
	c, err := protocol.Dial(ctx, a.String(), protocol.Options{
		RequestTimeout: 400 * time.Millisecond, IdleTimeout: 2 * time.Second,
		HandshakeTimeout: 2 * time.Second,
		MaxAttempts:      20, BaseBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	owner := dial(t, ts, protocol.Options{})
	mb, err := owner.CreateMailbox(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}

	// Black-hole replies until the server has stored the message.
	proxy.dropDown.Store(true)
	stored := make(chan struct{})
	go func() {
		defer close(stored)
		for ctx.Err() == nil {
			msgs, _, err := owner.Fetch(ctx, mb, 0, 10)
			if err == nil && len(msgs) > 0 {
				time.Sleep(600 * time.Millisecond) // let the first attempt time out
				proxy.dropDown.Store(false)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	id := protocol.NewMessageID()
	dup, err := c.Send(ctx, mb.SendID, id, []byte("exactly once"), nil)
	<-stored
	if err != nil {
		t.Fatalf("send through a lost ack: %v", err)
	}
	if proxy.dropped.Load() == 0 {
		t.Fatal("the proxy dropped nothing: the test did not lose the ack")
	}
	if !dup {
		t.Fatal("the retry was not recognised as a duplicate: the first attempt's ack was not lost")
	}
	msgs, _, err := owner.Fetch(ctx, mb, 0, 10)
	if err != nil || len(msgs) != 1 || !bytes.Equal(msgs[0].Envelope, []byte("exactly once")) {
		t.Fatalf("mailbox holds %d messages (%v), want exactly one", len(msgs), err)
	}
}

// TestDeleteRetryAfterLostDone: the server deletes the mailbox but its Done
// is lost; the client's retry finds no mailbox and reports success, since
// the mailbox is gone as asked.
func TestDeleteRetryAfterLostDone(t *testing.T) {
	ts := startServer(t, nil)
	ctx := ctxT(t)
	proxy := newUDPProxy(t, ts.host)
	a, _ := wire.ParseAddress(ts.addr)
	a.Host = proxy.addr()
	c, err := protocol.Dial(ctx, a.String(), protocol.Options{
		RequestTimeout: 400 * time.Millisecond, IdleTimeout: 2 * time.Second, HandshakeTimeout: 2 * time.Second,
		MaxAttempts: 20, BaseBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mb, err := c.CreateMailbox(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	watcher := dial(t, ts, protocol.Options{})
	proxy.dropDown.Store(true)
	go func() {
		for ctx.Err() == nil {
			if _, _, err := watcher.Fetch(ctx, mb, 0, 1); isCode(err, wire.CodeNotFound) {
				time.Sleep(600 * time.Millisecond) // let the first attempt time out
				proxy.dropDown.Store(false)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	if err := c.DeleteMailbox(ctx, mb); err != nil {
		t.Fatalf("delete through a lost Done: %v", err)
	}
	if proxy.dropped.Load() == 0 {
		t.Fatal("no reply was lost: the test did not exercise the retry")
	}
}
