package invite

import (
	"crypto/sha256"
	"crypto/sha3"
	"encoding/base32"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/wire"
	"golang.org/x/crypto/cryptobyte"
)

// Prefix starts every invite of this version (docs/protocol.md §1.1.1).
const Prefix = "qpc1:"

// MaxLen is the longest invite text Parse reads (white space included):
// far above any real invite (about 330 characters, 560 with a witness
// policy of three witnesses), far below what would cost anything to look at.
const MaxLen = 4096

// Errors returned by Parse; each is wrapped with the detail.
var (
	// ErrMalformed: not an invite, or one whose fields do not parse.
	ErrMalformed = errors.New("invite: malformed")
	// ErrChecksum: the checksum does not match, a typo or a cut-off copy.
	ErrChecksum = errors.New("invite: checksum mismatch (a character is wrong, missing or extra: copy the invite again)")
	// ErrVersion: an invite of a later version than this qpc reads.
	ErrVersion = errors.New("invite: unsupported version")
	// ErrCritical: a field this qpc does not know and may not ignore,
	// from a later qpc: pinning the rest alone would trust too much.
	ErrCritical = errors.New("invite: unknown critical field (this qpc is too old for the invite: update it)")
)

// Field types (docs/protocol.md §1.1.1). A type with the optional bit set
// may be skipped by a reader that does not know it; any other unknown
// type fails the whole invite (ErrCritical).
const (
	fieldPin     = 0x01 // 32 bytes: SHA-256 of the server's SPKI
	fieldUDP     = 0x02 // host:port, text
	fieldOnion   = 0x03 // 32-byte v3 onion service key || u16 port
	fieldLogKey  = 0x04 // u8<key name> u8<signature type || public key>
	fieldVRFKey  = 0x05 // the VRF public key
	fieldConfig  = 0x06 // 32 bytes: the KT configuration hash
	fieldBuckets = 0x07 // u24 per bucket, ascending
	fieldWitness = 0x08 // the witness policy (policy.go)
	// fieldMore lists the endpoints of further nodes of the server, each
	// u8 type (fieldUDP or fieldOnion) u8<that field's value>. Optional:
	// a qpc that does not know it dials the first endpoints alone.
	fieldMore = optionalBit | 0x09

	optionalBit = 0x80
)

// alphabet is RFC 4648 §6 base32 in lower case; Parse folds case first.
var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// castagnoli is CRC-32C (RFC 3720 §12.1). Every CRC of degree 32 detects
// every burst of at most 32 bits, so any one character changed (5 bits of
// the decoded stream) or two adjacent ones swapped (10 bits) is caught,
// always; Castagnoli's polynomial also has Hamming distance 6 up to 5,243
// data bits (Koopman, DSN 2002), more than an invite holds. Bech32's BCH
// code guarantees more per symbol but only up to 89 characters, a third of
// an invite; a truncated SHA-256 guarantees nothing beyond chance.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Invite is what a client pins for a server.
type Invite struct {
	Pin   [wire.PinSize]byte // SHA-256 of the server's SubjectPublicKeyInfo
	UDP   string             // the QUIC endpoint, host:port; "" if none
	Onion string             // <56 characters>.onion:port; "" if none
	// LogKey is the key-transparency log's C2SP signed-note verifier key.
	LogKey     string
	VRFKey     []byte
	ConfigHash [32]byte
	// Buckets is the padding policy the server announces.
	Buckets padding.Policy
	// WitnessPolicy is the witness policy the log's checkpoints must
	// satisfy, as kt.WitnessPolicy.Text without witness URLs; "" if none.
	WitnessPolicy string
	// More are the endpoints of the server's further nodes (host:port or
	// <56 characters>.onion:port), after UDP and Onion; all of them
	// together at most wire.MaxEndpoints, none twice.
	More []string
}

// Address returns the qpc:// address to dial: the onion endpoints when tor
// is asked for (or are the only ones), else the UDP ones; each list in the
// invite's order, UDP or Onion first.
func (inv *Invite) Address(tor bool) string {
	var clear, onion []string
	for _, h := range append([]string{inv.UDP, inv.Onion}, inv.More...) {
		switch {
		case h == "":
		case isOnionEndpoint(h):
			onion = append(onion, h)
		default:
			clear = append(clear, h)
		}
	}
	hosts := clear
	if len(onion) > 0 && (tor || len(clear) == 0) {
		hosts = onion
	}
	a := wire.Address{Pin: inv.Pin}
	if len(hosts) > 0 {
		a.Host, a.More = hosts[0], hosts[1:]
	}
	if len(a.More) == 0 {
		a.More = nil
	}
	return a.String()
}

// isOnionEndpoint reports whether host:port names an onion service.
func isOnionEndpoint(hostport string) bool {
	h, _, err := net.SplitHostPort(hostport)
	return err == nil && wire.IsOnionHost(h)
}

// String returns the invite, or "" if a field cannot be encoded (Encode
// says why).
func (inv *Invite) String() string {
	s, err := inv.Encode()
	if err != nil {
		return ""
	}
	return s
}

// Encode checks every field as Parse would and returns the invite text.
func (inv *Invite) Encode() (string, error) {
	if err := inv.check(); err != nil {
		return "", err
	}
	var b cryptobyte.Builder
	field := func(t uint8, f func(b *cryptobyte.Builder)) {
		b.AddUint8(t)
		b.AddUint16LengthPrefixed(f)
	}
	field(fieldPin, func(b *cryptobyte.Builder) { b.AddBytes(inv.Pin[:]) })
	if inv.UDP != "" {
		field(fieldUDP, func(b *cryptobyte.Builder) { b.AddBytes([]byte(inv.UDP)) })
	}
	if inv.Onion != "" {
		key, port, err := onionKey(inv.Onion)
		if err != nil {
			return "", err
		}
		field(fieldOnion, func(b *cryptobyte.Builder) { b.AddBytes(key); b.AddUint16(port) })
	}
	name, key, err := splitVKey(inv.LogKey)
	if err != nil {
		return "", fmt.Errorf("%w: log key: %v", ErrMalformed, err)
	}
	field(fieldLogKey, func(b *cryptobyte.Builder) {
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(name)) })
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(key) })
	})
	field(fieldVRFKey, func(b *cryptobyte.Builder) { b.AddBytes(inv.VRFKey) })
	field(fieldConfig, func(b *cryptobyte.Builder) { b.AddBytes(inv.ConfigHash[:]) })
	field(fieldBuckets, func(b *cryptobyte.Builder) {
		for _, s := range inv.Buckets.Buckets() {
			b.AddUint24(uint32(s))
		}
	})
	if inv.WitnessPolicy != "" {
		wp, err := encodePolicy(inv.WitnessPolicy)
		if err != nil {
			return "", err
		}
		field(fieldWitness, func(b *cryptobyte.Builder) { b.AddBytes(wp) })
	}
	if len(inv.More) > 0 {
		var more cryptobyte.Builder
		for _, h := range inv.More {
			if isOnionEndpoint(h) {
				key, port, err := onionKey(h)
				if err != nil {
					return "", err
				}
				more.AddUint8(fieldOnion)
				more.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(key); b.AddUint16(port) })
				continue
			}
			more.AddUint8(fieldUDP)
			more.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(h)) })
		}
		mb, err := more.Bytes()
		if err != nil {
			return "", fmt.Errorf("%w: further endpoints: %v", ErrMalformed, err)
		}
		field(fieldMore, func(b *cryptobyte.Builder) { b.AddBytes(mb) })
	}
	body, err := b.Bytes()
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	text := Prefix + b32.EncodeToString(binary.BigEndian.AppendUint32(body, checksum(body)))
	if len(text) > MaxLen {
		return "", fmt.Errorf("%w: %d characters, more than %d (fewer or shorter endpoints)", ErrMalformed, len(text), MaxLen)
	}
	return text, nil
}

// checksum is CRC-32C over the prefix and the body: a version changed by
// hand fails the check too.
func checksum(body []byte) uint32 {
	return crc32.Update(crc32.Checksum([]byte(Prefix), castagnoli), castagnoli, body)
}

// Parse reads an invite: case and ASCII white space do not matter, any
// other change fails (ErrChecksum, or ErrMalformed naming what is wrong).
// Every key is checked the way the client will use it.
func Parse(s string) (*Invite, error) {
	if len(s) > MaxLen {
		return nil, fmt.Errorf("%w: %d characters, more than %d", ErrMalformed, len(s), MaxLen)
	}
	s = strings.ToLower(strings.Join(strings.Fields(s), ""))
	rest, ok := strings.CutPrefix(s, Prefix)
	if !ok {
		return nil, badPrefix(s)
	}
	raw, err := b32.DecodeString(rest)
	if err != nil {
		var ce base32.CorruptInputError
		if errors.As(err, &ce) && int(ce) < len(rest) {
			return nil, fmt.Errorf("%w: character %d (%q) cannot be in an invite", ErrMalformed, len(Prefix)+int(ce)+1, rest[ce])
		}
		return nil, fmt.Errorf("%w: length: %v (a character is missing or extra)", ErrChecksum, err)
	}
	// One spelling per invite: the last character's unused bits must be
	// zero, or a changed character could decode to the same bytes.
	if len(raw) < 4 || b32.EncodeToString(raw) != rest {
		return nil, ErrChecksum
	}
	body, sum := raw[:len(raw)-4], binary.BigEndian.Uint32(raw[len(raw)-4:])
	if checksum(body) != sum {
		return nil, ErrChecksum
	}
	inv, err := decodeBody(body)
	if err != nil {
		return nil, err
	}
	if err := inv.check(); err != nil {
		return nil, err
	}
	return inv, nil
}

// badPrefix explains text that does not start with Prefix.
func badPrefix(s string) error {
	if strings.HasPrefix(s, "qpc://") {
		return fmt.Errorf("%w: this is a server address, not an invite (qpc init --server <address> --kt <pin> takes it)", ErrMalformed)
	}
	if v, _, ok := strings.Cut(strings.TrimPrefix(s, "qpc"), ":"); ok && strings.HasPrefix(s, "qpc") && v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 1 {
			return fmt.Errorf("%w: the invite is version %d, this qpc reads version 1 (update qpc)", ErrVersion, n)
		}
	}
	return fmt.Errorf("%w: an invite starts with %q", ErrMalformed, Prefix)
}

func decodeBody(body []byte) (*Invite, error) {
	inv := &Invite{}
	in := cryptobyte.String(body)
	last := -1
	var seen [256]bool
	for !in.Empty() {
		var t uint8
		var v cryptobyte.String
		if !in.ReadUint8(&t) || !in.ReadUint16LengthPrefixed(&v) {
			return nil, fmt.Errorf("%w: truncated field", ErrMalformed)
		}
		// Ascending, each once: one invite has one encoding.
		if int(t) <= last {
			return nil, fmt.Errorf("%w: field %#02x out of order or repeated", ErrMalformed, t)
		}
		last = int(t)
		seen[t] = true
		if err := inv.decodeField(t, v); err != nil {
			return nil, err
		}
	}
	for _, f := range []struct {
		t    uint8
		name string
	}{{fieldPin, "server pin"}, {fieldLogKey, "log key"}, {fieldVRFKey, "VRF key"}, {fieldConfig, "configuration hash"}, {fieldBuckets, "padding buckets"}} {
		if !seen[f.t] {
			return nil, fmt.Errorf("%w: no %s", ErrMalformed, f.name)
		}
	}
	return inv, nil
}

func (inv *Invite) decodeField(t uint8, v cryptobyte.String) error {
	bad := func(what string) error { return fmt.Errorf("%w: bad %s", ErrMalformed, what) }
	switch t {
	case fieldPin:
		if !v.CopyBytes(inv.Pin[:]) || !v.Empty() {
			return bad("server pin")
		}
	case fieldUDP:
		if len(v) == 0 {
			return bad("UDP endpoint")
		}
		inv.UDP = string(v)
	case fieldOnion:
		var key []byte
		var port uint16
		if !v.ReadBytes(&key, 32) || !v.ReadUint16(&port) || !v.Empty() || port == 0 {
			return bad("onion endpoint")
		}
		inv.Onion = net.JoinHostPort(onionID(key)+".onion", strconv.Itoa(int(port)))
	case fieldLogKey:
		var name, key cryptobyte.String
		if !v.ReadUint8LengthPrefixed(&name) || !v.ReadUint8LengthPrefixed(&key) || !v.Empty() {
			return bad("log key")
		}
		inv.LogKey = joinVKey(string(name), key)
	case fieldVRFKey:
		inv.VRFKey = append([]byte(nil), v...)
	case fieldConfig:
		if !v.CopyBytes(inv.ConfigHash[:]) || !v.Empty() {
			return bad("configuration hash")
		}
	case fieldBuckets:
		var sizes []int
		for !v.Empty() {
			var s uint32
			if !v.ReadUint24(&s) {
				return bad("padding buckets")
			}
			sizes = append(sizes, int(s))
		}
		p, err := padding.NewPolicy(sizes...)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		inv.Buckets = p
	case fieldWitness:
		text, err := decodePolicy(v)
		if err != nil {
			return err
		}
		inv.WitnessPolicy = text
	case fieldMore:
		for !v.Empty() {
			var et uint8
			var ev cryptobyte.String
			if !v.ReadUint8(&et) || !v.ReadUint8LengthPrefixed(&ev) || len(inv.More) >= wire.MaxEndpoints {
				return bad("further endpoints")
			}
			switch et {
			case fieldUDP:
				// An onion goes as an onion entry: one encoding each.
				if len(ev) == 0 || isOnionEndpoint(string(ev)) {
					return bad("further endpoint")
				}
				inv.More = append(inv.More, string(ev))
			case fieldOnion:
				var key []byte
				var port uint16
				if !ev.ReadBytes(&key, 32) || !ev.ReadUint16(&port) || !ev.Empty() || port == 0 {
					return bad("further onion endpoint")
				}
				inv.More = append(inv.More, net.JoinHostPort(onionID(key)+".onion", strconv.Itoa(int(port))))
			default:
				return bad("further endpoint type")
			}
		}
		if len(inv.More) == 0 {
			return bad("further endpoints (an empty list)")
		}
	default:
		if t&optionalBit == 0 {
			return fmt.Errorf("%w: field %#02x", ErrCritical, t)
		}
	}
	return nil
}

// check validates the fields as a client will use them.
func (inv *Invite) check() error {
	if inv.UDP == "" && inv.Onion == "" {
		return fmt.Errorf("%w: no endpoint (UDP or onion)", ErrMalformed)
	}
	for _, host := range []string{inv.UDP, inv.Onion} {
		if host == "" {
			continue
		}
		if _, err := wire.ParseAddress(wire.Address{Pin: inv.Pin, Host: host}.String()); err != nil {
			return fmt.Errorf("%w: endpoint %q: %v", ErrMalformed, host, err)
		}
	}
	if inv.UDP != "" {
		if isOnionEndpoint(inv.UDP) {
			return fmt.Errorf("%w: an onion host in the UDP endpoint", ErrMalformed)
		}
		if err := checkUDP(inv.UDP); err != nil {
			return err
		}
	}
	if inv.Onion != "" {
		if _, _, err := onionKey(inv.Onion); err != nil {
			return err
		}
	}
	var all []string
	for _, h := range []string{inv.UDP, inv.Onion} {
		if h != "" {
			all = append(all, h)
		}
	}
	if n := len(all) + len(inv.More); n > wire.MaxEndpoints {
		return fmt.Errorf("%w: %d endpoints, at most %d", ErrMalformed, n, wire.MaxEndpoints)
	}
	for _, h := range inv.More {
		if isOnionEndpoint(h) {
			if _, _, err := onionKey(h); err != nil {
				return err
			}
		} else if err := checkUDP(h); err != nil {
			return err
		}
		if slices.ContainsFunc(all, func(e string) bool { return strings.EqualFold(e, h) }) {
			return fmt.Errorf("%w: endpoint %q twice", ErrMalformed, h)
		}
		all = append(all, h)
	}
	if _, err := kt.NewVerifier(inv.LogKey, inv.VRFKey, inv.ConfigHash); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if inv.Buckets.IsZero() {
		return fmt.Errorf("%w: no padding buckets", ErrMalformed)
	}
	if inv.WitnessPolicy != "" {
		wp, err := kt.ParseWitnessPolicy(inv.WitnessPolicy)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		if !wp.Required() {
			return fmt.Errorf("%w: a witness policy that requires nothing (leave it out)", ErrMalformed)
		}
	}
	return nil
}

// checkUDP checks a clearnet endpoint: an IP address or DNS name and a
// port in its one spelling.
func checkUDP(hostport string) error {
	h, port, err := net.SplitHostPort(hostport)
	if p, perr := strconv.ParseUint(port, 10, 16); err != nil || perr != nil || p == 0 || strconv.FormatUint(p, 10) != port || !hostName(h) {
		return fmt.Errorf("%w: UDP endpoint %q is not host:port", ErrMalformed, hostport)
	}
	// The address's own rules, as for the first endpoints: a name under
	// .onion that is not an onion's is refused, not dialled without Tor.
	if _, err := wire.ParseAddress(wire.Address{Host: hostport}.String()); err != nil {
		return fmt.Errorf("%w: UDP endpoint %q: %v", ErrMalformed, hostport, err)
	}
	return nil
}

// hostName reports an IP address or a DNS name (letters, digits, '-',
// '.'), so that an invite never carries text a terminal would act on.
func hostName(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	if h == "" || len(h) > 253 {
		return false
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// splitVKey splits a C2SP signed-note verifier key, name+hash+base64(key),
// into its name and key (signature type byte first), checking the hash.
func splitVKey(vkey string) (name string, key []byte, err error) {
	name, rest, ok := strings.Cut(vkey, "+")
	hash, b64, ok2 := strings.Cut(rest, "+")
	if !ok || !ok2 || len(hash) != 8 {
		return "", nil, errors.New("not a name+hash+key verifier key")
	}
	key, err = base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil || len(key) == 0 || len(name) > 255 || len(key) > 255 {
		return "", nil, errors.New("bad key")
	}
	if joinVKey(name, key) != vkey {
		return "", nil, errors.New("key hash does not match")
	}
	return name, key, nil
}

// joinVKey rebuilds a verifier key from its name and key: the key hash is
// the first 4 bytes of SHA-256(name || "\n" || key) (C2SP signed-note,
// "Verifier keys"), so the invite need not carry it.
func joinVKey(name string, key []byte) string {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte("\n"))
	h.Write(key)
	return fmt.Sprintf("%s+%08x+%s", name, binary.BigEndian.Uint32(h.Sum(nil)), base64.StdEncoding.EncodeToString(key))
}

// onionID is the v3 onion service ID of an Ed25519 key: base32 of
// key || checksum || version, the checksum being the first 2 bytes of
// SHA3-256(".onion checksum" || key || version) (Tor rend-spec-v3 §6).
func onionID(key []byte) string {
	const version = 3
	h := sha3.New256()
	h.Write([]byte(".onion checksum"))
	h.Write(key)
	h.Write([]byte{version})
	id := append(append(append([]byte(nil), key...), h.Sum(nil)[:2]...), version)
	return b32.EncodeToString(id)
}

// onionKey returns the service key and port of an onion host:port,
// checking the ID's checksum and version.
func onionKey(hostport string) ([]byte, uint16, error) {
	host, port, err := net.SplitHostPort(hostport)
	id, ok := strings.CutSuffix(strings.ToLower(host), ".onion")
	if err != nil || !ok || !wire.IsOnionHost(host) {
		return nil, 0, fmt.Errorf("%w: onion endpoint %q is not <56 characters>.onion:port", ErrMalformed, hostport)
	}
	raw, err := b32.DecodeString(id)
	if err != nil || len(raw) != 35 || onionID(raw[:32]) != id {
		return nil, 0, fmt.Errorf("%w: onion endpoint %q: bad checksum or version", ErrMalformed, hostport)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return nil, 0, fmt.Errorf("%w: onion endpoint %q: bad port", ErrMalformed, hostport)
	}
	return raw[:32], uint16(p), nil
}
