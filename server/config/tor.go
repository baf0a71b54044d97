package config

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/quicprochat/qpc/tor"
	"github.com/quicprochat/qpc/wire"
)

// TorSettings are the Tor keys of Config (docs/tor.md), embedded in it so
// that they decode from the same TOML table.
type TorSettings struct {
	Onion           bool   `toml:"onion"`             // publish an onion service beside the UDP listener
	OnionOnly       bool   `toml:"onion_only"`        // the onion service and nothing else
	OnionPort       int    `toml:"onion_port"`        // virtual port on the .onion
	OnionListen     string `toml:"onion_listen"`      // where tor forwards: loopback host:port or unix:/path
	OnionClientAuth bool   `toml:"onion_client_auth"` // v3 client authorization with the keys in onion_clients/
	TorControl      string `toml:"tor_control"`       // an existing tor's control port; off: start our own
	TorBinary       string `toml:"tor_binary"`        // our own tor's binary
	TorConfig       string `toml:"tor_config"`        // extra torrc lines for our own tor, from this file; or off
	TunnelListen    string `toml:"tunnel_listen"`     // TCP host:port of QUIC over TCP for clients through Tor exits; or off
}

// TorOff turns off tor_control, tor_config and tunnel_listen (an empty value
// would read as unset in the environment).
const TorOff = "off"

func defaultTorSettings() TorSettings {
	port, _ := strconv.Atoi(wire.OnionPort)
	return TorSettings{OnionPort: port, OnionListen: "127.0.0.1:0", TorControl: TorOff, TorBinary: "tor", TorConfig: TorOff, TunnelListen: TorOff}
}

// ServesOnion reports whether the server publishes an onion service.
func (c *Config) ServesOnion() bool { return c.Onion || c.OnionOnly }

// TorDataDir is our own tor's data directory, inside the server's.
func (c *Config) TorDataDir() string { return filepath.Join(c.DataDir, "tor") }

// OnionKeyPath is the onion service key: the .onion address.
func (c *Config) OnionKeyPath() string { return filepath.Join(c.DataDir, tor.OnionKeyFile) }

// OnionClientsDir holds the authorized client keys, one <name>.auth each.
func (c *Config) OnionClientsDir() string { return filepath.Join(c.DataDir, tor.OnionClientsDir) }

var torConfigFields = []configField{
	{
		key:   "onion",
		help:  "also serve as a Tor onion service (QUIC tunneled over the onion's TCP streams), beside the UDP listener",
		parse: func(c *Config, s string) error { return parseBool(&c.Onion, s) },
		copy:  func(d, s *Config) { d.Onion = s.Onion },
		check: func(c *Config) error { return nil },
		value: func(c *Config) any { return c.Onion },
	},
	{
		key:  "onion_only",
		help: "serve only as an onion service: no clearnet listener, no DNS lookup, no socket but to 127.0.0.1 and tor",
		parse: func(c *Config, s string) error {
			return parseBool(&c.OnionOnly, s)
		},
		copy: func(d, s *Config) { d.OnionOnly = s.OnionOnly },
		check: func(c *Config) error {
			if !c.OnionOnly {
				return nil
			}
			// Checked here as well as at their own keys, so that a value
			// set in any layer cannot slip past onion-only mode.
			if c.TunnelListen != TorOff {
				if err := CheckLoopback(c.TunnelListen); err != nil {
					return fmt.Errorf("tunnel_listen %w; an onion-only server listens on loopback only", err)
				}
			}
			if c.AdminListen != AdminOff {
				if err := CheckLoopback(c.AdminListen); err != nil {
					return fmt.Errorf("admin_listen %w; an onion-only server listens on loopback only", err)
				}
			}
			if c.TorControl != TorOff {
				if err := checkControl(c.TorControl); err != nil {
					return fmt.Errorf("tor_control %w", err)
				}
			}
			return nil
		},
		value: func(c *Config) any { return c.OnionOnly },
	},
	{
		key:   "onion_port",
		help:  "virtual port of the onion service; an address without a port means " + wire.OnionPort,
		parse: func(c *Config, s string) error { return parseInt(&c.OnionPort, s) },
		copy:  func(d, s *Config) { d.OnionPort = s.OnionPort },
		check: func(c *Config) error { return checkRange(int64(c.OnionPort), 1, 65535) },
		value: func(c *Config) any { return c.OnionPort },
	},
	{
		key:   "onion_listen",
		help:  "where tor forwards onion streams to us: a loopback host:port (port 0 picks one) or unix:/absolute/path",
		parse: func(c *Config, s string) error { c.OnionListen = s; return nil },
		copy:  func(d, s *Config) { d.OnionListen = s.OnionListen },
		check: func(c *Config) error {
			if p, ok := strings.CutPrefix(c.OnionListen, "unix:"); ok {
				if !filepath.IsAbs(p) {
					return fmt.Errorf("%q: the socket path must be absolute", c.OnionListen)
				}
				return nil
			}
			return CheckLoopback(c.OnionListen)
		},
		value: func(c *Config) any { return c.OnionListen },
	},
	{
		key:   "onion_client_auth",
		help:  "require Tor v3 client authorization: only clients added with qpc-server onion add-client can reach the onion",
		parse: func(c *Config, s string) error { return parseBool(&c.OnionClientAuth, s) },
		copy:  func(d, s *Config) { d.OnionClientAuth = s.OnionClientAuth },
		check: func(c *Config) error { return nil },
		value: func(c *Config) any { return c.OnionClientAuth },
	},
	{
		key:   "tor_control",
		help:  "control port of a running tor to publish through (127.0.0.1:9051 or unix:/run/tor/control), or off to start a tor of our own (password, if tor wants one: env QPC_TOR_CONTROL_PASSWORD)",
		parse: func(c *Config, s string) error { c.TorControl = s; return nil },
		copy:  func(d, s *Config) { d.TorControl = s.TorControl },
		check: func(c *Config) error {
			if c.TorControl == TorOff {
				return nil
			}
			return checkControl(c.TorControl)
		},
		value: func(c *Config) any { return c.TorControl },
	},
	{
		key:   "tor_binary",
		help:  "the tor binary our own tor runs (looked up in PATH)",
		parse: func(c *Config, s string) error { c.TorBinary = s; return nil },
		copy:  func(d, s *Config) { d.TorBinary = s.TorBinary },
		check: func(c *Config) error {
			if c.TorBinary == "" {
				return errors.New("must not be empty")
			}
			return nil
		},
		value: func(c *Config) any { return c.TorBinary },
	},
	{
		key:   "tor_config",
		help:  "file of extra torrc lines for our own tor (bridges, or a private test network), or off",
		parse: func(c *Config, s string) error { c.TorConfig = s; return nil },
		copy:  func(d, s *Config) { d.TorConfig = s.TorConfig },
		check: func(c *Config) error { return nil },
		value: func(c *Config) any { return c.TorConfig },
	},
	{
		key:   "tunnel_listen",
		help:  "TCP host:port serving QUIC over TCP (the tunnel framing) for clients that reach this clearnet server through Tor exits, or off",
		parse: func(c *Config, s string) error { c.TunnelListen = s; return nil },
		copy:  func(d, s *Config) { d.TunnelListen = s.TunnelListen },
		check: func(c *Config) error {
			if c.TunnelListen == TorOff {
				return nil
			}
			return checkListen(c.TunnelListen)
		},
		value: func(c *Config) any { return c.TunnelListen },
	},
}

// checkControl accepts unix:/path or a loopback IP and port: the control
// port grants full control of tor, and a name would need a DNS lookup.
func checkControl(s string) error {
	if p, ok := strings.CutPrefix(s, "unix:"); ok {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("%q: the socket path must be absolute", s)
		}
		return nil
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		return fmt.Errorf("%q is not host:port or unix:/path", s)
	}
	return CheckLoopback(s)
}

// CheckLoopback refuses a host:port whose host is not a loopback IP
// address. A name is refused too: resolving it would be a DNS lookup,
// which an onion-only server must never make.
func CheckLoopback(hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", hostport, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback IP address", hostport)
	}
	return nil
}
