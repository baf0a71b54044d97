package onion

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/tor"
)

// TestAttachToRunningTor publishes through the control port of a tor
// that runs on its own (as a system tor would), authenticating with its
// cookie. The service lives on our control connection only, so closing
// that connection withdraws it while that tor goes on.
func TestAttachToRunningTor(t *testing.T) {
	nw, socks := network(t)
	system := startClientTor(t, nw) // stands in for the system's tor
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	reports := 0
	attached, err := tor.Attach(ctx, system.ControlAddr(), "", func(tor.Progress) { reports++ })
	if err != nil {
		t.Fatalf("attach to %s: %v", system.ControlAddr(), err)
	}
	defer attached.Close()
	if reports == 0 {
		t.Error("no bootstrap progress reported on attach")
	}
	if _, err := tor.Attach(ctx, "127.0.0.1:1", "", nil); err == nil {
		t.Error("attach to a closed port succeeded")
	}

	srv := publishServer(t, nw, attached, nil, "")
	c, err := protocol.Dial(ctx, srv.addr, protocol.Options{Tor: &protocol.TorOptions{SOCKS: socks}})
	if err != nil {
		t.Fatalf("dial the onion published through the attached tor: %v", err)
	}
	if _, err := c.Health(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()

	// The service is not detached: another controller does not see it
	// among the detached ones, and it goes with our connection.
	if d, _ := system.GetInfo("onions/detached"); strings.Contains(d, srv.onion.Service.ID) {
		t.Error("the onion was published detached")
	}
	attached.Close()
	if _, err := system.GetInfo("version"); err != nil {
		t.Fatalf("the running tor did not survive our controller leaving: %v", err)
	}
	// A fresh circuit (another isolation key) must now fail to reach it:
	// tor has the descriptor cached and keeps trying introduction points
	// that are gone. A live onion answers here within a few seconds, so
	// 20 s without a connection is the proof.
	short, cancelShort := context.WithTimeout(ctx, 20*time.Second)
	defer cancelShort()
	if _, err := protocol.Dial(short, srv.addr, protocol.Options{Tor: &protocol.TorOptions{SOCKS: socks}}); err == nil {
		t.Error("the onion still answers after the controller that published it left")
	}
}
