package tor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"golang.org/x/net/proxy"
)

// Dialer opens TCP streams through Tor. SOCKSDialer is the implementation;
// tests and callers with their own transport can supply another.
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// SOCKSDialer dials through a tor SOCKS port.
type SOCKSDialer struct {
	// Addr is tor's SOCKS port, host:port (system tor: 127.0.0.1:9050)
	// or "unix:/path".
	Addr string
	// Isolation is sent as the SOCKS username. Tor (IsolateSOCKSAuth,
	// on by default) never lets streams with different usernames share
	// a circuit, so what shares an isolation key is linkable by the exit
	// or the onion service, and what does not is not. Empty: tor's
	// default isolation only.
	Isolation string
	// Progress, if set, hears every second while the circuit is built.
	Progress func(Progress)
}

// NewIsolationKey returns a random isolation key, for one circuit of its
// own.
func NewIsolationKey() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// DialContext opens a stream to addr (host:port; a .onion host is resolved
// by tor, never by us) through tor.
func (d *SOCKSDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if network != "tcp" {
		return nil, fmt.Errorf("tor: dial %s: tor carries only tcp", network)
	}
	pnet, paddr := "tcp", d.Addr
	if p, ok := strings.CutPrefix(d.Addr, "unix:"); ok {
		pnet, paddr = "unix", p
	}
	var auth *proxy.Auth
	if d.Isolation != "" {
		// Tor ignores the password for isolation purposes only if it
		// is the same; fixing it keeps the username the only key.
		auth = &proxy.Auth{User: d.Isolation, Password: "qpc"}
	}
	fwd := &rawDialer{}
	pd, err := proxy.SOCKS5(pnet, paddr, auth, fwd)
	if err != nil {
		return nil, fmt.Errorf("tor: %w", err)
	}
	start := time.Now()
	stop := make(chan struct{})
	if d.Progress != nil {
		d.Progress(Progress{Stage: StageConnect, Summary: "building a circuit to " + addr})
		go func() {
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					d.Progress(Progress{Stage: StageConnect, Summary: "building a circuit to " + addr, Elapsed: time.Since(start)})
				}
			}
		}()
	}
	conn, err := pd.(proxy.ContextDialer).DialContext(ctx, "tcp", addr)
	close(stop)
	if err != nil {
		return nil, fmt.Errorf("tor: dial %s through %s: %w", addr, d.Addr, explainSOCKS(err))
	}
	if d.Progress != nil {
		d.Progress(Progress{Stage: StageConnect, Percent: 100, Summary: "connected", Elapsed: time.Since(start)})
	}
	if fwd.conn != nil {
		// The SOCKS handshake is over and x/net's wrapper adds only
		// the bound address; the plain connection keeps SyscallConn,
		// through which tor/tunnel turns off delayed ACKs.
		return fwd.conn, nil
	}
	return conn, nil
}

// rawDialer dials tor's SOCKS port and remembers the connection, so that
// DialContext can return it rather than x/net's wrapper around it.
type rawDialer struct {
	net.Dialer
	conn net.Conn
}

func (r *rawDialer) Dial(network, addr string) (net.Conn, error) {
	return r.DialContext(context.Background(), network, addr)
}

func (r *rawDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := r.Dialer.DialContext(ctx, network, addr)
	r.conn = c
	return c, err
}

// ErrClientAuth is returned when the onion service requires client
// authorization that this tor lacks or that the service refused.
var ErrClientAuth = errors.New("tor: the onion service requires client authorization")

// explainSOCKS names tor's extended SOCKS errors (tor's SocksPort
// ExtendedErrors flag, proposal 304), which x/net reports as numbers.
func explainSOCKS(err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "unknown code: 240"):
		return fmt.Errorf("onion service descriptor not found: %w", err)
	case strings.Contains(msg, "unknown code: 241"):
		return fmt.Errorf("onion service descriptor is invalid: %w", err)
	case strings.Contains(msg, "unknown code: 242"):
		return fmt.Errorf("onion service introduction failed: %w", err)
	case strings.Contains(msg, "unknown code: 243"):
		return fmt.Errorf("onion service rendezvous failed: %w", err)
	case strings.Contains(msg, "unknown code: 244"):
		return fmt.Errorf("%w (missing): %w", ErrClientAuth, err)
	case strings.Contains(msg, "unknown code: 245"):
		return fmt.Errorf("%w (refused): %w", ErrClientAuth, err)
	case strings.Contains(msg, "unknown code: 246"):
		return fmt.Errorf("bad onion address: %w", err)
	case strings.Contains(msg, "unknown code: 247"):
		return fmt.Errorf("onion service introduction timed out: %w", err)
	}
	return err
}
