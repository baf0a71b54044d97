package protocol

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quicprochat/qpc/tor"
	"github.com/quicprochat/qpc/tor/tunnel"
)

// DefaultTorSOCKS is the SOCKS port of a system tor (Debian's tor
// package), used for onion addresses when TorOptions names none.
const DefaultTorSOCKS = "127.0.0.1:9050"

// TorOptions route connections through Tor. Onion addresses always go
// through Tor; Always sends clearnet addresses through it too. QUIC runs
// over a TCP stream through the circuit (tor/tunnel), and every redial
// opens a new stream.
type TorOptions struct {
	// Dialer opens the streams. Default: Tor's SOCKS port if Tor is
	// set, else SOCKS (default DefaultTorSOCKS).
	Dialer tor.Dialer
	Tor    *tor.Tor // our own tor process (tor.Start)
	SOCKS  string   // tor's SOCKS port, host:port or unix:/path

	// Isolation is the SOCKS username, which tor uses to keep circuits
	// apart: connections with different keys never share a circuit, so
	// the server cannot link them by circuit. Empty (the default): a
	// random key per Conn, so one Conn per mailbox gives one circuit per
	// mailbox. IsolationKey("identity", name) keeps all of one identity's
	// connections on shared circuits instead.
	Isolation string

	// Always sends clearnet addresses through Tor as well, out through an
	// exit relay to the server's TCP tunnel listener (the server must run
	// one on the address's port: qpc-server --tunnel-listen).
	Always bool

	// ConnectTimeout bounds the circuit, the QUIC handshake and the hello
	// of one dial through Tor; default 2 minutes.
	ConnectTimeout time.Duration

	// Progress, if set, hears while a circuit is built.
	Progress func(tor.Progress)
}

// IsolationKey derives a stable isolation key from parts (for example
// "identity", "alice"), hashed so that tor's logs do not show them.
func IsolationKey(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return "qpc-" + hex.EncodeToString(h[:12])
}

func (o *Options) setTorDefaults() {
	t := TorOptions{}
	if o.Tor != nil {
		t = *o.Tor
	}
	if t.Isolation == "" {
		t.Isolation = tor.NewIsolationKey()
	}
	if t.ConnectTimeout <= 0 {
		t.ConnectTimeout = 2 * time.Minute
	}
	o.Tor = &t
}

// viaTor reports whether this Conn's QUIC goes through Tor.
// When any endpoint is an onion service every one is: failing over from
// an onion to a clearnet node must not reveal the client's address.
func (c *Conn) viaTor() bool { return c.onion || c.opts.Tor.Always }

func (c *Conn) torDialer() (tor.Dialer, error) {
	t := c.opts.Tor
	if t.Dialer != nil {
		return t.Dialer, nil
	}
	if t.Tor != nil {
		d, err := t.Tor.Dialer(t.Isolation)
		if err != nil {
			return nil, err
		}
		d.Progress = t.Progress
		return d, nil
	}
	socks := t.SOCKS
	if socks == "" {
		socks = DefaultTorSOCKS
	}
	return &tor.SOCKSDialer{Addr: socks, Isolation: t.Isolation, Progress: t.Progress}, nil
}

// dialTor opens a stream through Tor to the server and runs QUIC over it.
// The stream and its transport end with the QUIC connection.
func (c *Conn) dialTor(ctx context.Context, host string, qconf *quic.Config) (*quic.Conn, error) {
	d, err := c.torDialer()
	if err != nil {
		return nil, err
	}
	stream, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	pc := tunnel.Client(stream, tunnel.Options{})
	tr := &quic.Transport{Conn: pc}
	qc, err := tr.Dial(ctx, pc.RemoteAddr(), c.tlsConfig(), pc.QUICConfig(qconf))
	if err != nil {
		tr.Close()
		pc.Close()
		return nil, fmt.Errorf("quic over tor: %w", err)
	}
	go func() {
		<-qc.Context().Done()
		tr.Close()
		pc.Close()
	}()
	return qc, nil
}
