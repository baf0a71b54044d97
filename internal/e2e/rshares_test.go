package e2e

import (
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quicprochat/qpc/server"
)

// TestAttackRateRefusedStreamsHeld: a stranger on one address opens more
// streams than its connections' request rate allows and sends each half
// a record header. The streams the rate refuses are not counted against
// max_streams_per_addr or max_streams_total, so each must cost nothing:
// they are answered RATE_LIMITED at once, without waiting for their
// records. Before the fix the server read each of them for up to
// request_timeout in a goroutine of its own, so one address held
// max_conns_per_addr × max_streams (6,400 at the defaults) streams
// beyond its stream cap.
func TestAttackRateRefusedStreamsHeld(t *testing.T) {
	const perAddr, conns, perConn, burst = 8, 3, 20, 2
	ts := startServer(t, func(o *server.Options) {
		o.MaxStreamsPerAddr = perAddr
		o.RequestRate, o.RequestBurst = 0.01, burst
		o.RequestTimeout = 20 * time.Second // a held stream is not cut off during the test
	})
	var sts []*quic.Stream
	for range conns {
		sts = append(sts, stalled(t, rawFrom(t, ts, "127.0.0.2"), perConn)...)
	}
	got := outcomes(sts, 2*time.Second)
	if held := count(got, waiting); held > perAddr {
		t.Fatalf("%d stalled streams from one address: the server holds %d of them unanswered, want at most max_streams_per_addr %d (%d refused)",
			len(sts), held, perAddr, count(got, refused))
	}
	if n := count(got, refused); n != len(sts)-conns*burst {
		t.Errorf("%d streams refused RATE_LIMITED, want %d (outcomes %v)", n, len(sts)-conns*burst, got)
	}
	other := dialFrom(t, ts, "127.0.0.3")
	if _, err := other.Health(ctxT(t)); err != nil {
		t.Fatalf("a client on another address: %v", err)
	}
}
