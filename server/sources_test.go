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
