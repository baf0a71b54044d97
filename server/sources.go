package server

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/quicprochat/qpc/server/config"
	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/wire"
)

// Streams and delivery bytes per source (docs/operations.md "Limits",
// docs/adr/0013). A source is what the connection caps count: an IPv4 address
// or an IPv6 /64, and, within it, its IPv6 /48. Over the onion service
// every client arrives from the tunnel's one address, so there each
// connection is a source of its own and only the server-wide caps bound
// them together.
//
// Each source may hold at most MaxStreamsPerAddr request streams across
// all its connections (its /48 MaxStreamsPerAddr × MaxConnsPerNet /
// MaxConnsPerAddr, the same multiple as for connections) and at most
// DeliverySourceBytes of delivery_bytes; a stream beyond its source's cap
// is reset with RATE_LIMITED at once, before anything of it is read.
//
// The server-wide caps (MaxStreamsTotal, DeliveryBytes) are shared fairly
// (max-min): when one is full, a source that holds less than the source
// holding the most takes its room by resetting one of that source's
// streams (UNAVAILABLE). So an attacker on many addresses can fill the
// server only while nobody else wants it; an honest client that holds
// nothing never waits behind the attacker's streams or bytes. The caps'
// defaults are config.DefaultMaxStreamsPerAddr, DefaultMaxStreamsTotal and
// DefaultDeliverySourceBytes.

func (o *Options) setSourceDefaults() {
	orDefault(&o.MaxStreamsPerAddr, config.DefaultMaxStreamsPerAddr)
	orDefault(&o.MaxStreamsTotal, config.DefaultMaxStreamsTotal)
	o.MaxStreamsPerAddr = min(o.MaxStreamsPerAddr, o.MaxStreamsTotal)
	if o.DeliverySourceBytes <= 0 {
		o.DeliverySourceBytes = min(config.DefaultDeliverySourceBytes, o.DeliveryBytes)
	}
}

// checkSourceBudgets says whether the per-source budgets fit the others.
func checkSourceBudgets(o *Options) error {
	if o.DeliverySourceBytes < o.DeliveryConnBytes || o.DeliverySourceBytes > o.DeliveryBytes {
		return fmt.Errorf("server: delivery budgets: want per connection (%d) ≤ per source (%d) ≤ total (%d)",
			o.DeliveryConnBytes, o.DeliverySourceBytes, o.DeliveryBytes)
	}
	return nil
}

// sourceKey names a source: a clearnet prefix, or an onion connection.
type sourceKey struct {
	prefix netip.Prefix
	conn   uint64 // an onion connection's number; 0 on clearnet
}

// source is what one source holds.
type source struct {
	streams  int   // open request streams
	delivery int64 // delivery bytes held
	// entries are the source's open streams, so that one can be reset
	// when a source holding less needs room (primary sources only).
	entries map[*streamEntry]struct{}
	// net is a primary source's IPv6 /48, nil for others: the group it
	// is shared out within (see most).
	net *source
}

// group is what a primary source is compared by when room is shared out:
// its IPv6 /48, all onion connections together, or itself (an IPv4
// address).
func (s *source) group() *source {
	if s.net != nil {
		return s.net
	}
	return s
}

// streamEntry is one admitted request stream.
type streamEntry struct {
	keys    connSources
	primary *source // the address (or onion connection)
	network *source // the IPv6 /48, or nil
	group   *source // all onion connections together (max-min only), or nil
	cancel  func()  // resets the stream (preemption)
	held    int64   // delivery bytes this stream holds
	gone    bool    // released or preempted: counts nothing any more
}

// sourceTable counts streams and delivery bytes per source and in total.
// Sources live in it only while they hold a stream; nothing logs or
// exports their addresses.
type sourceTable struct {
	mu       sync.Mutex
	sources  map[sourceKey]*source
	streams  int               // all open request streams
	delivery int64             // all delivery bytes held
	waiters  []*deliveryWaiter // streams waiting for delivery bytes, oldest first
	// holdGrants: bytes freed by resets go to the stream that reset
	// them, not to the waiting streams.
	holdGrants bool
	// tor counts the streams and delivery bytes of all onion
	// connections together: the group max-min sharing compares them as
	// (most), since onion connections cost a stranger nothing. No cap
	// applies to it.
	tor source

	maxStreams, maxStreamsAddr, maxStreamsNet int
	deliveryMax, deliveryAddr, deliveryNet    int64
	metrics                                   *metrics.Metrics
}

func newSourceTable(o *Options) *sourceTable {
	mult := max(1, o.MaxConnsPerNet/o.MaxConnsPerAddr)
	return &sourceTable{
		sources:        make(map[sourceKey]*source),
		maxStreams:     o.MaxStreamsTotal,
		maxStreamsAddr: o.MaxStreamsPerAddr,
		maxStreamsNet:  o.MaxStreamsPerAddr * mult,
		deliveryMax:    o.DeliveryBytes,
		deliveryAddr:   o.DeliverySourceBytes,
		deliveryNet:    min(o.DeliveryBytes, o.DeliverySourceBytes*int64(mult)),
		metrics:        o.Metrics,
	}
}

// connSources are the keys of a connection's source.
type connSources struct {
	primary, network sourceKey
	hasNetwork       bool
	tor              bool // an onion connection
}

// connSourceKeys returns the source keys of a connection: its address
// (IPv6: /64) and /48 on clearnet, the connection itself over Tor or when
// the address is not UDP.
func connSourceKeys(info ConnInfo) connSources {
	if info.Transport != metrics.TransportTor {
		if addr, network, ok := sourceKeys(info.RemoteAddr); ok {
			return connSources{primary: sourceKey{prefix: addr}, network: sourceKey{prefix: network}, hasNetwork: network.IsValid()}
		}
	}
	return connSources{primary: sourceKey{conn: info.ID}, tor: info.Transport == metrics.TransportTor}
}

func (t *sourceTable) get(k sourceKey) *source {
	s := t.sources[k]
	if s == nil {
		s = &source{}
		t.sources[k] = s
	}
	return s
}

func (t *sourceTable) drop(k sourceKey, s *source) {
	if s.streams == 0 && s.delivery == 0 {
		delete(t.sources, k)
	}
}

// admitStream counts a new request stream of cs, or says which cap
// refuses it. cancel resets the stream; it is called (under the table's
// lock, so it must not block) if a source holding fewer streams needs the
// stream's slot. Release the entry with releaseStream.
func (t *sourceTable) admitStream(cs connSources, cancel func()) (*streamEntry, *wire.Error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.get(cs.primary)
	var n *source
	if cs.hasNetwork {
		n = t.get(cs.network)
		p.net = n
	}
	refuse := func(limit, detail string) (*streamEntry, *wire.Error) {
		t.drop(cs.primary, p)
		if n != nil {
			t.drop(cs.network, n)
		}
		t.metrics.Refused(limit)
		return nil, wire.Errorf(wire.CodeRateLimited, "%s", detail)
	}
	if p.streams >= t.maxStreamsAddr {
		return refuse(metrics.LimitStreamsPerAddr, "too many request streams from your address, retry later")
	}
	if n != nil && n.streams >= t.maxStreamsNet {
		return refuse(metrics.LimitStreamsPerAddr, "too many request streams from your network, retry later")
	}
	if t.streams >= t.maxStreams {
		// Take the slot of a stream of the source that holds the most,
		// if it holds more than this one will.
		streams := func(s *source) int64 { return int64(s.streams) }
		victim := t.most(streams)
		if victim == nil || !t.holdsMore(victim, p, streams, 1) {
			return refuse(metrics.LimitStreams, "server at its limit of request streams, retry later")
		}
		for e := range victim.entries {
			t.preempt(e)
			t.metrics.Refused(metrics.LimitStreams)
			break
		}
	}
	e := &streamEntry{keys: cs, primary: p, network: n, cancel: cancel}
	if cs.tor {
		// Set after the check above: a new onion connection (it holds
		// nothing yet) is compared with the onion group as a whole, so
		// a newcomer over Tor takes a stranger's slot even when every
		// onion connection holds one stream; its later streams are
		// compared within the group.
		p.net, e.group = &t.tor, &t.tor
		t.tor.streams++
	}
	if p.entries == nil {
		p.entries = make(map[*streamEntry]struct{})
	}
	p.entries[e] = struct{}{}
	p.streams++
	if n != nil {
		n.streams++
	}
	t.streams++
	return e, nil
}

// most returns the primary source to take room from, or nil: of the
// group (an IPv6 /48, an IPv4 address, all onion connections) with the
// largest by(), its primary source with the largest by(). Comparing /64s
// alone let a stranger with one /48 (65,536 /64s, each holding one
// stream) be many small sources and take from an honest client holding
// a few streams again and again, while the /48 held far more.
func (t *sourceTable) most(by func(*source) int64) *source {
	var best *source
	for _, s := range t.sources {
		if len(s.entries) == 0 {
			continue
		}
		if best == nil {
			best = s
			continue
		}
		g, bg := by(s.group()), by(best.group())
		if g > bg || s.group() == best.group() && by(s) > by(best) {
			best = s
		}
	}
	return best
}

// holdsMore says whether victim (from most) holds more than p will once
// it has taken extra: compared as groups when they are of different
// groups, as sources within one. The caller holds t.mu.
func (t *sourceTable) holdsMore(victim, p *source, by func(*source) int64, extra int64) bool {
	if victim.group() != p.group() {
		return by(victim.group()) > by(p.group())+extra
	}
	return victim != p && by(victim) > by(p)+extra
}

// preempt resets e's stream and takes what it holds off the counts at
// once: its goroutine frees the memory as it unwinds.
func (t *sourceTable) preempt(e *streamEntry) {
	t.forget(e)
	e.cancel()
}

// forget takes e off every count. The caller holds t.mu.
func (t *sourceTable) forget(e *streamEntry) {
	if e.gone {
		return
	}
	e.gone = true
	t.giveBackLocked(e, e.held)
	delete(e.primary.entries, e)
	e.primary.streams--
	if e.network != nil {
		e.network.streams--
	}
	if e.group != nil {
		e.group.streams--
	}
	t.streams--
	t.drop(e.keys.primary, e.primary)
	if e.network != nil {
		t.drop(e.keys.network, e.network)
	}
}

// releaseStream ends e's stream's count (and any delivery bytes it still
// holds). It may be called more than once.
func (t *sourceTable) releaseStream(e *streamEntry) {
	if e == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.forget(e)
}

// reserveDelivery takes n delivery bytes for e's stream within its
// source's share and the server's budget, waiting until ctx ends. When
// the server's budget is full and another source holds more than e's
// will after the reservation, that source's streams holding the most are
// reset until the bytes fit. Waiting streams are granted bytes in the
// order they came, as bytes are given back, each within its source's
// share (so a source at its share does not hold up the others).
func (t *sourceTable) reserveDelivery(ctx context.Context, e *streamEntry, n int64) error {
	t.mu.Lock()
	if e.gone {
		t.mu.Unlock()
		return errPreempted
	}
	if t.tryDelivery(e, n, true) {
		t.mu.Unlock()
		return nil
	}
	w := &deliveryWaiter{e: e, n: n, ready: make(chan struct{})}
	t.waiters = append(t.waiters, w)
	t.mu.Unlock()
	select {
	case <-w.ready:
	case <-ctx.Done():
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if w.granted && !e.gone {
		return nil
	}
	if i := slices.Index(t.waiters, w); i >= 0 {
		t.waiters = slices.Delete(t.waiters, i, i+1)
	}
	if e.gone {
		return errPreempted
	}
	return ctx.Err()
}

// errPreempted answers a stream reset to make room for a source holding
// less.
var errPreempted = wire.Errorf(wire.CodeUnavailable, "stream reset to make room for others, retry later")

// deliveryWaiter is a stream waiting for delivery bytes.
type deliveryWaiter struct {
	e       *streamEntry
	n       int64
	ready   chan struct{} // closed once granted
	granted bool
}

// tryDelivery takes n bytes for e if they fit, resetting streams of a
// source holding more when preempt is set. The caller holds t.mu.
func (t *sourceTable) tryDelivery(e *streamEntry, n int64, preempt bool) bool {
	if !t.shareFits(e, n) {
		return false // its own bytes come back as its own streams write
	}
	p := e.primary
	// What the resets free goes to e first, then to the streams waiting.
	t.holdGrants = true
	reset := false
	for preempt && t.delivery+n > t.deliveryMax {
		// The server's budget is full: take room from the source
		// holding the most, while it holds more than p will.
		delivery := func(s *source) int64 { return s.delivery }
		victim := t.most(delivery)
		if victim == nil || !t.holdsMore(victim, p, delivery, n) {
			break
		}
		var big *streamEntry
		for v := range victim.entries {
			if big == nil || v.held > big.held {
				big = v
			}
		}
		if big == nil || big.held == 0 {
			break
		}
		t.metrics.Refused(metrics.LimitDeliveryBytes)
		t.preempt(big)
		reset = true
	}
	ok := t.delivery+n <= t.deliveryMax
	if ok {
		t.take(e, n)
	}
	t.holdGrants = false
	if reset {
		t.grant()
	}
	return ok
}

// shareFits says whether n more bytes fit e's source's share.
func (t *sourceTable) shareFits(e *streamEntry, n int64) bool {
	return e.primary.delivery+n <= t.deliveryAddr && (e.network == nil || e.network.delivery+n <= t.deliveryNet)
}

// fits says whether n more bytes for e fit its share and the total.
func (t *sourceTable) fits(e *streamEntry, n int64) bool {
	return t.shareFits(e, n) && t.delivery+n <= t.deliveryMax
}

// take counts n more delivery bytes for e. The caller holds t.mu.
func (t *sourceTable) take(e *streamEntry, n int64) {
	p, nw := e.primary, e.network
	e.held += n
	p.delivery += n
	if nw != nil {
		nw.delivery += n
	}
	if e.group != nil {
		e.group.delivery += n
	}
	t.delivery += n
	t.metrics.SetDeliveryBytes(t.delivery)
}

// giveBackDelivery returns n of the delivery bytes e's stream holds (less
// if it was reset meanwhile: its bytes were written off then).
func (t *sourceTable) giveBackDelivery(e *streamEntry, n int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.giveBackLocked(e, n)
}

func (t *sourceTable) giveBackLocked(e *streamEntry, n int64) {
	n = min(n, e.held)
	if n <= 0 {
		return
	}
	e.held -= n
	e.primary.delivery -= n
	if e.network != nil {
		e.network.delivery -= n
	}
	if e.group != nil {
		e.group.delivery -= n
	}
	t.delivery -= n
	t.metrics.SetDeliveryBytes(t.delivery)
	if !t.holdGrants {
		t.grant()
	}
}

// grant gives waiting streams, oldest first, what now fits. The caller
// holds t.mu.
func (t *sourceTable) grant() {
	for i := 0; i < len(t.waiters) && t.delivery < t.deliveryMax; {
		w := t.waiters[i]
		if !w.e.gone && t.fits(w.e, w.n) {
			t.take(w.e, w.n)
			w.granted = true
			close(w.ready)
			t.waiters = slices.Delete(t.waiters, i, i+1)
			continue
		}
		i++
	}
}
