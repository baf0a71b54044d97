package client

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/wire"
)

// TestServerCausedNoNetwork: a failure with nothing answered around it,
// not even a probe, is this side's (no network) and is not counted; the
// same failure while the server answered another request of this client
// a moment before, on any connection, is the server's; so is one that
// came with an answer.
func TestServerCausedNoNetwork(t *testing.T) {
	c, _, _ := gossipClient(t)
	opts := protocol.Options{HandshakeTimeout: 300 * time.Millisecond, MaxAttempts: 1, Answered: c.answers.mark}
	// Nothing listens here: every dial fails, as a Health request on a
	// connection whose server is gone redials and fails.
	dead := func(ctx context.Context) error {
		conn, err := protocol.Dial(ctx, wire.Address{Host: "127.0.0.1:9"}.String(), opts)
		if err == nil {
			conn.Close()
		}
		return err
	}
	ctx := context.Background()
	start := time.Now()
	lost := errors.Join(errors.New("kt history"), io.EOF)
	if c.serverCaused(ctx, dead, lost, start) {
		t.Fatal("nothing answered, the probe neither: counted as the server's doing")
	}
	if c.serverCaused(ctx, nil, lost, start) {
		t.Fatal("nothing answered, no connection to probe: counted as the server's doing")
	}
	if !c.serverCaused(ctx, dead, wire.Errorf(wire.CodeUnavailable, "later"), start) {
		t.Fatal("an error record is the server's doing")
	}
	c.answers.mark() // another request of this client was answered
	if !c.serverCaused(ctx, nil, lost, time.Now()) {
		t.Fatal("the server answered another request a moment ago, yet the failure is not counted")
	}
	if c.serverCaused(ctx, nil, lost, time.Now().Add(2*recentAnswer)) {
		t.Fatal("an answer long before the check counted")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if c.serverCaused(cctx, nil, lost, time.Now()) {
		t.Fatal("the caller's cancelled context counted as the server's doing")
	}
}

// TestKTContext: under a caller's deadline, a check's requests end
// earlier, keeping time to classify the failure; without one, none is
// added.
func TestKTContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	kctx, kcancel := ktContext(ctx)
	defer kcancel()
	dl, _ := ctx.Deadline()
	kdl, ok := kctx.Deadline()
	if d := dl.Sub(kdl); !ok || d < 400*time.Millisecond || d > 600*time.Millisecond {
		t.Fatalf("kept %v before the caller's deadline, want a quarter of 2 s", dl.Sub(kdl))
	}
	long, lcancel := context.WithTimeout(context.Background(), time.Hour)
	defer lcancel()
	kl, klcancel := ktContext(long)
	defer klcancel()
	dl, _ = long.Deadline()
	if kdl, _ := kl.Deadline(); dl.Sub(kdl) != probeTimeout {
		t.Fatalf("kept %v of an hour, want %v", dl.Sub(kdl), probeTimeout)
	}
	bg, bcancel := ktContext(context.Background())
	defer bcancel()
	if _, ok := bg.Deadline(); ok {
		t.Fatal("a deadline added where the caller set none")
	}
}
