package server

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/quic-go/quic-go"
	"github.com/quicprochat/qpc/server/config"
	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/tor"
	"github.com/quicprochat/qpc/tor/tunnel"
	"github.com/quicprochat/qpc/wire"
)

// quicConfigurer is a PacketConn that fits the QUIC configuration to
// itself, as tor/tunnel does.
type quicConfigurer interface {
	QUICConfig(*quic.Config) *quic.Config
}

// OnionOptions publish the server as a Tor onion service.
type OnionOptions struct {
	Tor *tor.Tor           // our own tor (tor.Start) or an attached one (tor.Attach)
	Key ed25519.PrivateKey // the onion address; tor.LoadOrCreateOnionKey
	// Port is the virtual port on the .onion; default wire.OnionPort, the
	// one an address without a port names.
	Port int
	// Listen is where tor forwards streams to us: "127.0.0.1:0" (the
	// default) or another loopback address, or "unix:/absolute/path".
	Listen string
	// Clients, if any, turns on v3 client authorization.
	Clients  []tor.ClientKey
	Progress func(tor.Progress)
}

// Onion is a published onion service and the tunnel it feeds. Give Conn
// to Serve; Shutdown closes it, Close withdraws the service.
type Onion struct {
	Service *tor.OnionService
	Conn    *tunnel.PacketConn
}

// Address is the server's onion address, qpc://<pin>@<id>.onion (with
// the port only when it is not wire.OnionPort).
func (o *Onion) Address(id *Identity) wire.Address {
	return id.Address(net.JoinHostPort(o.Service.ID+".onion", strconv.Itoa(o.Service.Port)))
}

// ServeOnion serves the onion's tunnel until Shutdown, as a transport of
// its own (metrics label "tor"; every client shares tor's address there,
// so no per-address limit applies).
func (s *Server) ServeOnion(o *Onion) error {
	return s.ServeTransport(o.Conn, metrics.TransportTor)
}

// Close withdraws the onion service (the tunnel is closed by Shutdown).
func (o *Onion) Close() error { return o.Service.Close() }

// ListenOnion opens the tunnel listener on loopback or a unix socket and
// publishes the onion service pointing at it, waiting until ctx for the
// descriptor to be uploaded.
func ListenOnion(ctx context.Context, o OnionOptions) (*Onion, error) {
	if o.Tor == nil || o.Key == nil {
		return nil, errors.New("onion: Tor and Key are required")
	}
	if o.Port == 0 {
		o.Port, _ = strconv.Atoi(wire.OnionPort)
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	ln, target, err := listenTunnel(o.Listen)
	if err != nil {
		return nil, fmt.Errorf("onion: %w", err)
	}
	pc := tunnel.Server(ln, tunnel.Options{})
	svc, err := o.Tor.Publish(ctx, tor.OnionConfig{
		Key: o.Key, VirtualPort: o.Port, Target: target, Clients: o.Clients, Progress: o.Progress,
	})
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("onion: %w", err)
	}
	return &Onion{Service: svc, Conn: pc}, nil
}

// listenTunnel listens where tor may forward: loopback TCP or a unix
// socket, never anything reachable from the network.
func listenTunnel(addr string) (net.Listener, string, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, "", err
		}
		os.Remove(abs) // a socket left by an earlier run
		ln, err := net.Listen("unix", abs)
		if err != nil {
			return nil, "", err
		}
		return ln, "unix:" + abs, nil
	}
	if err := config.CheckLoopback(addr); err != nil {
		return nil, "", err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	return ln, ln.Addr().String(), nil
}
