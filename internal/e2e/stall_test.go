package e2e

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/metrics"
)

// TestStalledStreamsCutOff: a client that opens the most streams a
// connection may hold and stalls on each, mid-request, is cut off by the
// request timeout: every stream is reset, its slot comes back, the refusal
// is counted, and another client works normally meanwhile.
func TestStalledStreamsCutOff(t *testing.T) {
	const maxStreams = 8
	m := metrics.New("test")
	ts := startServer(t, withMetrics(m, func(o *server.Options) {
		o.MaxStreams = maxStreams
		o.RequestTimeout = 1500 * time.Millisecond
	}))
	base := serveAdmin(t, ts)
	ctx := ctxT(t)
	// Another client's 10 health checks before anyone stalls: the
	// baseline of this machine, now.
	tenHealth := func(other *protocol.Conn) time.Duration {
		start := time.Now()
		for range 10 {
			if _, err := other.Health(ctx); err != nil {
				t.Fatalf("another client while one stalls: %v", err)
			}
		}
		return time.Since(start)
	}
	quiet := tenHealth(dial(t, ts, protocol.Options{}))
	qc := rawHelloConn(t, ts)
	var streams []*quic.Stream
	for range maxStreams {
		st, err := qc.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Half a record header, then nothing.
		if _, err := st.Write([]byte{0x16, 0x00}); err != nil {
			t.Fatal(err)
		}
		streams = append(streams, st)
	}
	// The connection has no stream credit left.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	if _, err := qc.OpenStreamSync(short); err == nil {
		t.Fatalf("a stream beyond max_streams opened")
	}
	cancel()

	// Others are served while the stalled streams hold their slots: a
	// second, or four times the quiet baseline on a loaded machine (a
	// client held up by the stalls would wait for their cut-off).
	if d := tenHealth(dial(t, ts, protocol.Options{})); d > max(time.Second, 4*quiet) {
		t.Errorf("10 health checks took %v while another client stalled (%v before)", d, quiet)
	}

	// Each stalled stream is reset by the server after the request timeout.
	for i, st := range streams {
		st.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := st.Read(make([]byte, 1))
		var se *quic.StreamError
		if !errors.As(err, &se) || !se.Remote {
			t.Fatalf("stream %d: %v, want a reset from the server", i, err)
		}
	}
	// Their slots came back.
	again, cancel2 := context.WithTimeout(ctx, 5*time.Second)
	defer cancel2()
	st, err := qc.OpenStreamSync(again)
	if err != nil {
		t.Fatalf("no stream slot after the cut-off: %v", err)
	}
	st.CancelWrite(0)
	if got := value(scrape(t, base), "qpc_limit_refusals_total", "limit", metrics.LimitRequestTimeout); got != maxStreams {
		t.Errorf("request_timeout refusals: %v, want %d", got, maxStreams)
	}
}
