package invite

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/quicprochat/qpc/internal/qrcode"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/wire"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/mod/sumdb/note"
	"rsc.io/qr"
)

var update = flag.Bool("update", false, "rewrite testdata/good_* and fail_* from the samples")

// seeded returns n deterministic bytes, so the vectors are stable.
func seeded(label string, n int) []byte {
	var out []byte
	for i := 0; len(out) < n; i++ {
		s := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", label, i)))
		out = append(out, s[:]...)
	}
	return out[:n]
}

func logKey(t testing.TB) string {
	_, vkey, err := note.GenerateKey(bytes.NewReader(seeded("log", 64)), "kt.chat.example.org")
	if err != nil {
		t.Fatal(err)
	}
	return vkey
}

// witnessVKey is a cosignature/v1 (type 0x04) verifier key.
func witnessVKey(name string) string {
	pub := ed25519.NewKeyFromSeed(seeded(name, 32)).Public().(ed25519.PublicKey)
	return joinVKey(name, append([]byte{0x04}, pub...))
}

func onionHost(port string) string { return onionID(seeded("onion", 32)) + ".onion:" + port }

// policy3 is a policy of three witnesses, two of which must cosign, as
// `qpc-server kt-vkey` prints it (URLs included).
func policy3() string {
	var b strings.Builder
	for i := 1; i <= 3; i++ {
		n := fmt.Sprintf("witness%d.example.net", i)
		fmt.Fprintf(&b, "witness %s %s https://%s/\n", n, witnessVKey(n), n)
	}
	b.WriteString("group quorum-group 2 witness1.example.net witness2.example.net witness3.example.net\nquorum quorum-group\n")
	return b.String()
}

// withoutURLs is what Parse returns for a policy: no witness URLs.
func withoutURLs(p string) string {
	var b strings.Builder
	for l := range strings.Lines(p) {
		f := strings.Fields(l)
		if f[0] == "witness" && len(f) == 4 {
			f = f[:3]
		}
		b.WriteString(strings.Join(f, " ") + "\n")
	}
	return b.String()
}

func sample(t testing.TB) *Invite {
	inv := &Invite{
		UDP:     "chat.example.org:4433",
		LogKey:  logKey(t),
		VRFKey:  seeded("vrf", 32),
		Buckets: padding.Default,
	}
	copy(inv.Pin[:], seeded("pin", 32))
	copy(inv.ConfigHash[:], seeded("config", 32))
	return inv
}

// samples are the good vectors: every combination of endpoints, a
// witness policy, other buckets.
func samples(t testing.TB) map[string]*Invite {
	udp := sample(t)
	onion := sample(t)
	onion.UDP, onion.Onion = "", onionHost("4433")
	both := sample(t)
	both.Onion = onionHost("443")
	witnesses := sample(t)
	witnesses.Onion = onionHost("4433")
	witnesses.WitnessPolicy = withoutURLs(policy3())
	buckets := sample(t)
	buckets.UDP = "[2001:db8::1]:4433"
	buckets.Buckets, _ = padding.NewPolicy(512, 4096, 65536)
	one := sample(t)
	one.UDP = "192.0.2.7:4433"
	one.WitnessPolicy = "witness w1 " + witnessVKey("w1.example") + "\nquorum w1\n"
	nodes := sample(t)
	nodes.UDP = "node1.example.org:4433"
	nodes.Onion = onionHost("4433")
	nodes.More = []string{"node2.example.org:4433", "[2001:db8::2]:4433", onionID(seeded("onion2", 32)) + ".onion:4433"}
	return map[string]*Invite{"udp": udp, "onion": onion, "udp_onion": both, "witnesses3": witnesses, "ipv6_buckets": buckets, "witness_other_key_name": one,
		"nodes": nodes}
}

func TestRoundTrip(t *testing.T) {
	for name, inv := range samples(t) {
		s, err := inv.Encode()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := Parse(s)
		if err != nil {
			t.Fatalf("%s: Parse(%s): %v", name, s, err)
		}
		if !reflect.DeepEqual(got, inv) {
			t.Errorf("%s: round trip\n got %+v\nwant %+v", name, got, inv)
		}
		if again := got.String(); again != s {
			t.Errorf("%s: re-encoding differs", name)
		}
		// Case and white space do not matter: a QR code carries upper
		// case, chat apps wrap lines.
		for _, v := range []string{strings.ToUpper(s), " " + s[:20] + "\n" + s[20:] + "\t\r\n"} {
			if g, err := Parse(v); err != nil || !reflect.DeepEqual(g, inv) {
				t.Errorf("%s: Parse(%q) = %v", name, v, err)
			}
		}
	}
}

// The policy the server prints (with URLs) goes in; the client's copy
// (without) comes out, and pins the same quorum.
func TestWitnessPolicyWithURLs(t *testing.T) {
	inv := sample(t)
	inv.WitnessPolicy = policy3()
	got, err := Parse(inv.String())
	if err != nil {
		t.Fatal(err)
	}
	if got.WitnessPolicy != withoutURLs(policy3()) {
		t.Errorf("policy %q, want %q", got.WitnessPolicy, withoutURLs(policy3()))
	}
}

// TestTypos: every single-character change of an invite is refused, as
// are a deleted character, an inserted one and two neighbours swapped
// (the checksum is CRC-32C: every burst of up to 32 bits is caught).
func TestTypos(t *testing.T) {
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	for name, inv := range samples(t) {
		s := inv.String()
		refused := func(v, what string) {
			t.Helper()
			if _, err := Parse(v); err == nil {
				t.Fatalf("%s: %s accepted: %s", name, what, v)
			} else if !errors.Is(err, ErrChecksum) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrVersion) {
				t.Fatalf("%s: %s: error %v is none of the package's", name, what, err)
			}
		}
		n := 0
		for i := range len(s) {
			for _, c := range alphabet + "019:/.-_" {
				if byte(c) == s[i] || strings.EqualFold(string(c), s[i:i+1]) {
					continue
				}
				refused(s[:i]+string(c)+s[i+1:], fmt.Sprintf("character %d changed to %q", i, c))
				n++
			}
			refused(s[:i]+s[i+1:], fmt.Sprintf("character %d deleted", i))
			refused(s[:i]+"a"+s[i:], fmt.Sprintf("a inserted at %d", i))
			if i+1 < len(s) && s[i] != s[i+1] {
				refused(s[:i]+s[i+1:i+2]+s[i:i+1]+s[i+2:], fmt.Sprintf("characters %d and %d swapped", i, i+1))
			}
		}
		for cut := 1; cut < len(s); cut++ {
			refused(s[:cut], fmt.Sprintf("cut to %d characters", cut))
		}
		t.Logf("%s: %d characters, %d single-character changes refused", name, len(s), n)
	}
}

// raw builds an invite from a body as given, checksum included, for the
// cases Encode refuses to make.
func raw(body []byte) string {
	return Prefix + b32.EncodeToString(binary.BigEndian.AppendUint32(body, checksum(body)))
}

func body(t testing.TB, inv *Invite) []byte {
	s, err := inv.Encode()
	if err != nil {
		t.Fatal(err)
	}
	b, err := b32.DecodeString(strings.TrimPrefix(s, Prefix))
	if err != nil {
		t.Fatal(err)
	}
	return b[:len(b)-4]
}

func withField(t testing.TB, b []byte, typ uint8, value []byte) []byte {
	var out cryptobyte.Builder
	out.AddBytes(b)
	out.AddUint8(typ)
	out.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(value) })
	return out.BytesOrPanic()
}

// fieldsWithout drops field typ from a body.
func fieldsWithout(t testing.TB, b []byte, typ uint8) []byte { return replaceField(t, b, typ, nil) }

// replaceField gives field typ another value, in its place (nil: drops it).
func replaceField(t testing.TB, b []byte, typ uint8, value []byte) []byte {
	var out cryptobyte.Builder
	in := cryptobyte.String(b)
	for !in.Empty() {
		var ft uint8
		var v cryptobyte.String
		if !in.ReadUint8(&ft) || !in.ReadUint16LengthPrefixed(&v) {
			t.Fatal("bad body")
		}
		if ft == typ {
			if value == nil {
				continue
			}
			v = value
		}
		out.AddUint8(ft)
		out.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(v) })
	}
	return out.BytesOrPanic()
}

// failures are the fail_ vectors: name -> invite text, each named after
// the error it must give.
func failures(t testing.TB) map[string]string {
	good := sample(t)
	b := body(t, good)
	s := good.String()
	return map[string]string{
		"checksum_one_character":      s[:40] + map[bool]string{true: "b", false: "a"}[s[40] == 'a'] + s[41:],
		"checksum_cut_off":            s[:len(s)-1],
		"version_changed":             "qpc2:" + s[5:],
		"malformed_address":           "qpc://" + base64.RawURLEncoding.EncodeToString(good.Pin[:]) + "@chat.example.org:4433",
		"malformed_character":         s[:30] + "1" + s[31:],
		"malformed_no_pin":            raw(fieldsWithout(t, b, fieldPin)),
		"malformed_no_endpoint":       raw(fieldsWithout(t, b, fieldUDP)),
		"malformed_no_buckets":        raw(fieldsWithout(t, b, fieldBuckets)),
		"malformed_field_twice":       raw(withField(t, b, fieldBuckets, []byte{0, 2, 0})),
		"malformed_bad_buckets":       raw(replaceField(t, b, fieldBuckets, []byte{0, 1, 0})),
		"malformed_vrf_key_short":     raw(replaceField(t, b, fieldVRFKey, seeded("vrf", 31))),
		"malformed_policy_no_ref":     raw(withField(t, b, fieldWitness, []byte{tagQuorum, 0})),
		"checksum_trailing_bits":      s[:len(s)-1] + string(lastBitsChanged(s)),
		"critical_unknown_field":      raw(withField(t, b, 0x7f, []byte("later"))),
		"version_2":                   "qpc2:aaaa",
		"malformed_more_repeated":     raw(withField(t, b, fieldMore, moreUDP(good.UDP))),
		"malformed_more_seventeen":    raw(withField(t, b, fieldMore, moreUDP(seventeen()[1:]...))),
		"malformed_more_empty":        raw(withField(t, b, fieldMore, nil)),
		"malformed_more_onion_as_udp": raw(withField(t, b, fieldMore, moreUDP(onionHost("4433")))),
		// Names Tor takes for an onion, spelled as none: never a clearnet
		// endpoint (TestAttackOnionLookalikeRefused in wire).
		"malformed_udp_onion_subdomain": raw(replaceField(t, b, fieldUDP, []byte("www."+onionHost("4433")))),
		"malformed_more_onion_dot":      raw(withField(t, b, fieldMore, moreUDP(strings.Replace(onionHost("4433"), ".onion:", ".onion.:", 1)))),
	}
}

// lastBitsChanged returns the last character with its unused low bits
// set, where there are any: it decodes to the same bytes.
func lastBitsChanged(s string) byte {
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	c := strings.IndexByte(alphabet, s[len(s)-1])
	return alphabet[c|1]
}

// An unknown field with the optional bit is skipped.
func TestOptionalFieldSkipped(t *testing.T) {
	inv := sample(t)
	got, err := Parse(raw(withField(t, body(t, inv), 0xf0, []byte("from a later qpc"))))
	if err != nil || !reflect.DeepEqual(got, inv) {
		t.Fatalf("optional field: %v", err)
	}
}

// TestVectors checks testdata/good_*.txt (parse, re-encode exactly) and
// fail_*.txt (refused with the error the name says). -update rewrites
// them from samples and failures.
func TestVectors(t *testing.T) {
	if *update {
		for name, inv := range samples(t) {
			writeVector(t, "good_"+name+".txt", inv.String())
		}
		for name, s := range failures(t) {
			writeVector(t, "fail_"+name+".txt", s)
		}
	}
	files, err := filepath.Glob("testdata/*_*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no vectors: %v", err)
	}
	kinds := map[string]error{"checksum": ErrChecksum, "malformed": ErrMalformed, "critical": ErrCritical, "version": ErrVersion}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s := strings.TrimSpace(string(b))
		base := strings.TrimSuffix(filepath.Base(f), ".txt")
		inv, err := Parse(s)
		switch {
		case strings.HasPrefix(base, "good_"):
			if err != nil {
				t.Errorf("%s: %v", base, err)
			} else if inv.String() != s {
				t.Errorf("%s: re-encodes differently", base)
			}
		case strings.HasPrefix(base, "fail_"):
			kind, _, _ := strings.Cut(strings.TrimPrefix(base, "fail_"), "_")
			want := kinds[kind]
			if want == nil {
				t.Fatalf("%s: unknown kind %q", base, kind)
			}
			if !errors.Is(err, want) {
				t.Errorf("%s: got %v, want %v", base, err, want)
			}
		}
	}
}

func writeVector(t *testing.T, name, s string) {
	if err := os.WriteFile(filepath.Join("testdata", name), []byte(s+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestQRSize reports the invite's length and the QR version it needs,
// with and without a witness policy of three witnesses, and holds them to
// what a phone camera reads off a terminal without trouble.
func TestQRSize(t *testing.T) {
	for _, tc := range []struct {
		name       string
		inv        *Invite
		maxVersion int
	}{
		// 11: padding.V2's fifth bucket adds 3 bytes (5 characters) and
		// takes the invite one version past 10 (docs/adr/0018-buckets.md).
		{"udp+onion", samples(t)["udp_onion"], 11},
		{"udp+onion+3 witnesses", func() *Invite { i := samples(t)["udp_onion"]; i.WitnessPolicy = policy3(); return i }(), 15},
	} {
		s := tc.inv.String()
		var out bytes.Buffer
		if err := qrcode.Render(&out, strings.ToUpper(s)); err != nil {
			t.Fatal(err)
		}
		code, err := qr.Encode(strings.ToUpper(s), qr.L) // the level qrcode.Render uses
		if err != nil {
			t.Fatal(err)
		}
		version := (code.Size - 17) / 4
		lower, err := qr.Encode(s, qr.L)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d characters, QR version %d upper case (%d×%d modules, %d terminal lines), version %d in lower case",
			tc.name, len(s), version, code.Size, code.Size, strings.Count(out.String(), "\n"), (lower.Size-17)/4)
		if version > tc.maxVersion {
			t.Errorf("%s: QR version %d, want at most %d", tc.name, version, tc.maxVersion)
		}
	}
}

// moreUDP is the value of a further-endpoints field of clearnet hosts.
func moreUDP(hosts ...string) []byte {
	var b cryptobyte.Builder
	for _, h := range hosts {
		b.AddUint8(fieldUDP)
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(h)) })
	}
	return b.BytesOrPanic()
}

// seventeen are one endpoint more than an address holds.
func seventeen() []string {
	var hosts []string
	for i := range wire.MaxEndpoints + 1 {
		hosts = append(hosts, fmt.Sprintf("n%d.example.org:4433", i))
	}
	return hosts
}

// TestEndpoints: an invite of a server of several nodes gives the address
// of all of them (clearnet, or with tor the onions), and an older reader,
// which skips the optional field, the first endpoint alone; too many
// endpoints or one twice do not encode.
func TestEndpoints(t *testing.T) {
	inv := samples(t)["nodes"]
	s, err := inv.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	a, err := wire.ParseAddress(got.Address(false))
	if err != nil || !slices.Equal(a.Hosts(), []string{"node1.example.org:4433", "node2.example.org:4433", "[2001:db8::2]:4433"}) {
		t.Errorf("Address(false) = %s, %v; want the three clearnet nodes", got.Address(false), err)
	}
	a, err = wire.ParseAddress(got.Address(true))
	if err != nil || len(a.Hosts()) != 2 || !a.Onion() || !a.AnyOnion() || !wire.IsOnionHost(strings.Split(a.More[0], ":")[0]) {
		t.Errorf("Address(true) = %s, %v; want the two onions", got.Address(true), err)
	}
	// An older reader: the field is optional, so it is skipped.
	old := *got
	old.More = nil
	if a, _ := wire.ParseAddress(old.Address(false)); a.Host != "node1.example.org:4433" || a.More != nil {
		t.Errorf("without the further endpoints: %s", old.Address(false))
	}
	for name, more := range map[string][]string{
		"repeated":       {"node2.example.org:4433", "NODE2.example.org:4433"},
		"repeats UDP":    {inv.UDP},
		"too many":       seventeen()[2:],
		"not host:port":  {"node2.example.org"},
		"terminal codes": {"no\x1bde.example.org:1"},
	} {
		bad := *inv
		bad.More = more
		if _, err := bad.Encode(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Encode = %v, want ErrMalformed", name, err)
		}
	}
	t.Logf("invite of 2 + 3 endpoints: %d characters", len(s))
}
