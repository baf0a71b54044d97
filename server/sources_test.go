package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/quicprochat/qpc/server/metrics"
)

// TestAttackDeliverySourceShare: a source (an address; an IPv6 /48 as a
// multiple) cannot take more than its delivery_source_bytes of the
// server's delivery budget, however many streams and connections it
// uses: its next reservation waits for its own bytes, while another
// source is served at once.
func TestAttackDeliverySourceShare(t *testing.T) {
	const mib = 1 << 20
	o := Options{DeliveryBytes: 16 * mib, DeliveryConnBytes: mib, DeliverySourceBytes: 2 * mib}
	o.setLimitDefaults()
	o.setSourceDefaults()
	tab := newSourceTable(&o)
	from := func(ip string) connSources {
		return connSourceKeys(ConnInfo{ID: 1, Transport: metrics.TransportUDP, RemoteAddr: &net.UDPAddr{IP: net.ParseIP(ip), Port: 4433}})
	}
	reserve := func(cs connSources) error {
		e, refusal := tab.admitStream(cs, func() {})
		if refusal != nil {
			return refusal
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		return tab.reserveDelivery(ctx, e, mib)
	}
	for i := range 2 {
		if err := reserve(from("192.0.2.1")); err != nil {
			t.Fatalf("IPv4 source, MiB %d of its share: %v", i+1, err)
		}
	}
	if err := reserve(from("192.0.2.1")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("IPv4 source beyond its share: %v, want to wait", err)
	}
	if err := reserve(from("192.0.2.2")); err != nil {
		t.Fatalf("another source while the first is at its share: %v", err)
	}
	// An IPv6 /48 holds four /64s' shares (max_conns_per_net /
	// max_conns_per_addr), not 65,536.
	for i := range 4 {
		for range 2 {
			if err := reserve(from(fmt.Sprintf("2001:db8:1:%x::1", i))); err != nil {
				t.Fatalf("/64 %d of one /48: %v", i, err)
			}
		}
	}
	if err := reserve(from("2001:db8:1:ff::1")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a fifth /64 of a /48 at its share: %v, want to wait", err)
	}
	if err := reserve(from("2001:db8:2::1")); err != nil {
		t.Fatalf("another /48: %v", err)
	}
	if want := int64(2+1+8+1) * mib; tab.delivery != want {
		t.Errorf("the table holds %d bytes, want %d", tab.delivery, want)
	}
}

// TestAttackRequestSourceShare: a stranger on one address stalls records
// on many connections, each within its connection's request_conn_bytes.
// The address as a whole holds at most request_source_bytes, so it never
// fills request_bytes: a record from another address takes its bytes at
// once, without pushing out (and waiting for) anyone's.
func TestAttackRequestSourceShare(t *testing.T) {
	o := Options{RequestBytes: 1000, RequestConnBytes: 100, RequestSourceBytes: 250}
	o.setLimitDefaults()
	b := newRequestBudget(o)
	conn := func(ip string) *connState {
		return &connState{keys: connSourceKeys(ConnInfo{Transport: metrics.TransportUDP, RemoteAddr: &net.UDPAddr{IP: net.ParseIP(ip), Port: 4433}})}
	}
	var held []*bodyCharge
	refused := 0
	for range 10 { // 10 connections × 100: 1000, the whole budget
		cs := conn("192.0.2.1")
		for range 2 {
			c := &bodyCharge{b: b, cs: cs, st: &cancelStream{}}
			c.begin()
			if err := c.Take(50); err != nil {
				refused++
				continue
			}
			held = append(held, c)
		}
	}
	if got := len(held) * 50; got != 250 || refused != 20-5 {
		t.Fatalf("one address holds %d bytes (%d records refused), want 250 (15 refused)", got, refused)
	}
	other := &bodyCharge{b: b, cs: conn("192.0.2.2"), st: &cancelStream{}}
	other.begin()
	if err := other.Take(100); err != nil {
		t.Fatalf("another address: %v", err)
	}
	for _, c := range held {
		if c.st.(*cancelStream).cancelled.Load() {
			t.Fatal("a record was pushed out although the budget had room")
		}
	}
}
