package server

import (
	"fmt"
	"net"
	"testing"

	"github.com/quicprochat/qpc/server/metrics"
)

// TestAttackManySlash64sResetHonest: a stranger with one IPv6 /48 fills
// max_streams_total from many of its /64s, one stream each, then keeps
// opening streams from fresh /64s. Each /64 holds less than an honest
// client on another address holding a few streams (subscriptions), so
// comparing /64s alone let every new stream of the stranger reset one of
// the honest client's, however often it came back. Compared by group,
// the /48 holds the most, and its new streams take room only from its own.
func TestAttackManySlash64sResetHonest(t *testing.T) {
	const perAddr, total, honestStreams = 16, 64, 4
	o := Options{MaxStreamsPerAddr: perAddr, MaxStreamsTotal: total}
	o.setLimitDefaults()
	o.setDeliveryDefaults()
	o.setSourceDefaults()
	tab := newSourceTable(&o)
	from := func(ip string) connSources {
		return connSourceKeys(ConnInfo{ID: 1, Transport: metrics.TransportUDP, RemoteAddr: &net.UDPAddr{IP: net.ParseIP(ip), Port: 4433}})
	}
	honestReset := 0
	honest := from("192.0.2.7")
	for range honestStreams {
		if _, refusal := tab.admitStream(honest, func() { honestReset++ }); refusal != nil {
			t.Fatalf("an honest client's stream: %v", refusal)
		}
	}
	// The stranger's /48 may hold max_streams_per_addr × 4 streams: it
	// fills the rest of the server with one stream per /64.
	next := 0
	open := func() {
		// Refused or admitted: either way the honest client must keep
		// its streams.
		tab.admitStream(from(fmt.Sprintf("2001:db8:1:%x::1", next)), func() {})
		next++
	}
	for tab.streams < total {
		open()
	}
	// Then, from fresh /64s, as many streams again.
	for range total {
		open()
		if honestReset > 0 {
			t.Fatalf("after %d streams of a stranger's /48 (/64s holding one each, the /48 %d), the honest client holding %d had %d reset",
				next, tab.sources[from("2001:db8:1::1").network].streams, honestStreams, honestReset)
		}
	}
	if tab.streams > total {
		t.Fatalf("%d streams held, more than max_streams_total %d", tab.streams, total)
	}
	if h := tab.sources[honest.primary]; h == nil || h.streams != honestStreams {
		t.Errorf("the honest client holds %v, want its %d streams", h, honestStreams)
	}
}

// TestAttackOnionConnsResetHonest: over the onion service every
// connection is a source of its own, and connections cost a stranger
// nothing. One that fills max_streams_total with onion connections
// holding one stream each, then opens more, must not reset a clearnet
// client holding a few streams: all onion connections are compared as
// one group when room is shared out, and new ones take room from it.
func TestAttackOnionConnsResetHonest(t *testing.T) {
	const perAddr, total, honestStreams = 16, 64, 4
	o := Options{MaxStreamsPerAddr: perAddr, MaxStreamsTotal: total}
	o.setLimitDefaults()
	o.setDeliveryDefaults()
	o.setSourceDefaults()
	tab := newSourceTable(&o)
	honestReset := 0
	honest := connSourceKeys(ConnInfo{ID: 1, Transport: metrics.TransportUDP, RemoteAddr: &net.UDPAddr{IP: net.ParseIP("192.0.2.7"), Port: 4433}})
	for range honestStreams {
		if _, refusal := tab.admitStream(honest, func() { honestReset++ }); refusal != nil {
			t.Fatalf("an honest client's stream: %v", refusal)
		}
	}
	onionReset := 0
	for id := uint64(2); id < 2+2*total; id++ {
		tab.admitStream(connSourceKeys(ConnInfo{ID: id, Transport: metrics.TransportTor}), func() { onionReset++ })
		if honestReset > 0 {
			t.Fatalf("after %d onion connections of one stream each, the honest client holding %d had %d reset",
				id-1, honestStreams, honestReset)
		}
	}
	if tab.streams > total {
		t.Fatalf("%d streams held, more than max_streams_total %d", tab.streams, total)
	}
	if onionReset == 0 {
		t.Errorf("new onion connections took no room from the onion group: they were refused, not shared")
	}
}
