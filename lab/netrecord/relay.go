package netrecord

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quicprochat/qpc/lab/record"
)

// MaxDatagram is the largest datagram the relay forwards; QUIC's own limit
// is far below it.
const MaxDatagram = record.MaxDatagram

// flowIdle is how long a flow without traffic keeps its socket towards the
// server.
const flowIdle = 5 * time.Minute

// Stats count what the relay forwarded.
type Stats struct {
	UpPackets, UpBytes     int64 // client to server
	DownPackets, DownBytes int64 // server to client
	Flows                  int64 // client addresses seen
}

// Relay forwards datagrams between clients and one server.
type Relay struct {
	pc     net.PacketConn // the clients' side
	server *net.UDPAddr
	w      *record.NetworkWriter

	mu    sync.Mutex
	flows map[string]*flow
	wg    sync.WaitGroup

	closed                 atomic.Bool
	upP, upB, downP, downB atomic.Int64
	nflows                 atomic.Int64
	errMu                  sync.Mutex
	err                    error
}

type flow struct {
	client net.Addr
	name   string
	up     *net.UDPConn // connected to the server
	last   atomic.Int64 // unix nanoseconds of the last datagram
}

// Start listens on listen (a UDP host:port) and relays to server.
func Start(listen, server string, w *record.NetworkWriter) (*Relay, error) {
	sa, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		return nil, fmt.Errorf("netrecord: server address: %w", err)
	}
	pc, err := net.ListenPacket("udp", listen)
	if err != nil {
		return nil, fmt.Errorf("netrecord: listen: %w", err)
	}
	r := &Relay{pc: pc, server: sa, w: w, flows: map[string]*flow{}}
	r.wg.Add(1)
	go r.upstream()
	return r, nil
}

// Addr is where clients send: use it in place of the server's address.
func (r *Relay) Addr() net.Addr { return r.pc.LocalAddr() }

// Stats returns the counts so far.
func (r *Relay) Stats() Stats {
	return Stats{UpPackets: r.upP.Load(), UpBytes: r.upB.Load(), DownPackets: r.downP.Load(), DownBytes: r.downB.Load(), Flows: r.nflows.Load()}
}

// Close stops relaying, waits for the relay's goroutines and flushes the
// record. It returns the first error the relay met, if any.
func (r *Relay) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	r.pc.Close()
	r.mu.Lock()
	for _, f := range r.flows {
		f.up.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
	r.fail(r.w.Flush())
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return r.err
}

func (r *Relay) fail(err error) {
	if err == nil {
		return
	}
	r.errMu.Lock()
	defer r.errMu.Unlock()
	if r.err == nil {
		r.err = err
	}
}

// upstream reads the clients' datagrams and sends each on its flow's
// socket.
func (r *Relay) upstream() {
	defer r.wg.Done()
	buf := make([]byte, MaxDatagram)
	for {
		n, from, err := r.pc.ReadFrom(buf)
		if err != nil {
			if !r.closed.Load() {
				r.fail(fmt.Errorf("netrecord: read from clients: %w", err))
			}
			return
		}
		f, err := r.flow(from)
		if err != nil {
			r.fail(err)
			continue
		}
		f.last.Store(time.Now().UnixNano())
		r.fail(r.w.WriteNow(f.name, record.DirUp, n))
		r.upP.Add(1)
		r.upB.Add(int64(n))
		if _, err := f.up.Write(buf[:n]); err != nil && !r.closed.Load() {
			r.fail(fmt.Errorf("netrecord: write to server: %w", err))
		}
	}
}

// flow returns the flow of a client address, opening its socket towards
// the server the first time.
func (r *Relay) flow(from net.Addr) (*flow, error) {
	key := from.String()
	r.mu.Lock()
	defer r.mu.Unlock()
	if f, ok := r.flows[key]; ok {
		return f, nil
	}
	if r.closed.Load() {
		return nil, errors.New("netrecord: closed")
	}
	up, err := net.DialUDP("udp", nil, r.server)
	if err != nil {
		return nil, fmt.Errorf("netrecord: open flow to server: %w", err)
	}
	f := &flow{client: from, name: key, up: up}
	r.flows[key] = f
	r.nflows.Add(1)
	r.wg.Add(1)
	go r.downstream(f)
	return f, nil
}

// downstream carries the server's datagrams of one flow back to its client
// until the relay closes or the flow idles out.
func (r *Relay) downstream(f *flow) {
	defer r.wg.Done()
	buf := make([]byte, MaxDatagram)
	for {
		f.up.SetReadDeadline(time.Now().Add(flowIdle))
		n, err := f.up.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && time.Since(time.Unix(0, f.last.Load())) < flowIdle {
				continue
			}
			r.mu.Lock()
			delete(r.flows, f.name)
			r.mu.Unlock()
			f.up.Close()
			return
		}
		f.last.Store(time.Now().UnixNano())
		r.fail(r.w.WriteNow(f.name, record.DirDown, n))
		r.downP.Add(1)
		r.downB.Add(int64(n))
		if _, err := r.pc.WriteTo(buf[:n], f.client); err != nil && !r.closed.Load() {
			r.fail(fmt.Errorf("netrecord: write to client: %w", err))
		}
	}
}
