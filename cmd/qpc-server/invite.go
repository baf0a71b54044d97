package main

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"strconv"
	"strings"

	"github.com/quicprochat/qpc/internal/qrcode"
	"github.com/quicprochat/qpc/invite"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/config"
	"github.com/quicprochat/qpc/tor"
)

// invite prints the invite: the one string a client needs (`qpc init
// <invite>`), carrying the server pin, its endpoints, the key-transparency
// pin, the padding buckets and the witness policy. host replaces the
// listen host in the UDP endpoint (the name clients reach the server by);
// with qr, the invite follows as a QR code, in upper case, which QR's
// alphanumeric mode packs denser. others lists the endpoints of the
// server's further nodes, comma-separated (invite field 0x89).
func (c *cli) invite(cfg *config.Config, host, others string, qr bool) error {
	if !cfg.KT {
		return errors.New("an invite pins the key-transparency log, and kt is off")
	}
	id, err := server.LoadIdentity(cfg.DataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no server key in %s (run qpc-server init first)", cfg.DataDir)
	}
	if err != nil {
		return err
	}
	wp, err := cfg.KTWitnessPolicyParsed()
	if err != nil {
		return err
	}
	buckets, err := padding.NewPolicy(cfg.Buckets...)
	if err != nil {
		return err
	}
	keys, err := server.LoadOrCreateKTKeys(cfg.DataDir)
	if err != nil {
		return err
	}
	kc := server.KTConfig(cfg, keys)
	inv := &invite.Invite{Pin: id.Pin(), LogKey: keys.VKey, VRFKey: kc.VRFPublicKey, ConfigHash: kc.Hash(), Buckets: buckets}
	if wp.Required() {
		inv.WitnessPolicy = wp.Text()
	}
	if !cfg.OnionOnly {
		if inv.UDP, err = inviteHost(cfg.Listen, host); err != nil {
			return err
		}
	} else if host != "" {
		return errors.New("--host names the UDP endpoint, and this server is onion only")
	}
	if inv.Onion, err = onionHost(cfg); err != nil {
		return err
	}
	if others != "" {
		inv.More = strings.Split(others, ",")
	}
	s, err := inv.Encode()
	if err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, s)
	if qr {
		return qrcode.Render(c.stdout, strings.ToUpper(s))
	}
	return nil
}

// inviteHost is the UDP endpoint an invite carries: listen, with its host
// replaced by host if given. A client cannot dial an unspecified host or
// port 0, and an invite cannot be edited (its checksum), so those fail.
func inviteHost(listen, host string) (string, error) {
	h, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("listen %q: %w", listen, err)
	}
	if port == "0" {
		return "", errors.New("listen port 0 is chosen when the server starts: give --listen a fixed port")
	}
	if host != "" {
		h = host
	}
	if ip := net.ParseIP(h); h == "" || ip != nil && ip.IsUnspecified() {
		return "", fmt.Errorf("%s listens on every interface: give --host <the name or address clients reach this server by>", listen)
	}
	return net.JoinHostPort(h, port), nil
}

// onionHost is the onion endpoint of a server that serves one ("" if
// not): the onion key is its address, made here if tor has not yet.
func onionHost(cfg *config.Config) (string, error) {
	if !cfg.ServesOnion() {
		return "", nil
	}
	key, err := tor.LoadOrCreateOnionKey(cfg.OnionKeyPath())
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(tor.OnionID(key.Public().(ed25519.PublicKey))+".onion", strconv.Itoa(cfg.OnionPort)), nil
}
