package wire

import (
	"encoding/base64"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestOnionAddress(t *testing.T) {
	pin := PinSPKI([]byte("spki"))
	id := strings.Repeat("abcdefgh234567", 4) // 56 base32 characters
	bare := Address{Pin: pin, Host: id + ".onion:" + OnionPort}.String()
	if !strings.HasSuffix(bare, "@"+id+".onion") {
		t.Fatalf("onion address on the default port is %q, want no port", bare)
	}
	for _, tc := range []struct{ in, host string }{
		{bare, id + ".onion:4433"},
		{strings.Replace(bare, id, strings.ToUpper(id), 1), id + ".onion:4433"},
		{bare + ":8443", id + ".onion:8443"},
	} {
		a, err := ParseAddress(tc.in)
		if err != nil || a.Host != tc.host || a.Pin != pin || !a.Onion() {
			t.Errorf("ParseAddress(%q) = %+v, %v; want host %s, onion", tc.in, a, err, tc.host)
		}
	}
	if a, _ := ParseAddress(bare + ":8443"); a.String() != bare+":8443" {
		t.Errorf("non-default onion port lost: %s", a)
	}
	clear, _ := ParseAddress(Address{Pin: pin, Host: "example.org:4433"}.String())
	if clear.Onion() {
		t.Error("example.org taken for an onion")
	}
	// Not v3 onions: a v2 length, characters outside base32, no port.
	for _, bad := range []string{
		"qpc://" + bare[6:49] + "@" + id[:16] + ".onion",
		"qpc://" + bare[6:49] + "@" + id[:55] + "1.onion",
		"qpc://" + bare[6:49] + "@" + id + ".onio",
	} {
		if _, err := ParseAddress(bad); !errors.Is(err, ErrBadAddress) {
			t.Errorf("ParseAddress(%q) = %v, want ErrBadAddress", bad, err)
		}
	}
}

func TestAddressEndpoints(t *testing.T) {
	pin := PinSPKI([]byte("spki"))
	a := Address{Pin: pin, Host: "n1.example.org:4433", More: []string{"[2001:db8::1]:4433", strings.Repeat("abcdefgh234567", 4) + ".onion:4433"}}
	s := a.String()
	want := "qpc://" + s[6:49] + "@n1.example.org:4433,[2001:db8::1]:4433," + strings.Repeat("abcdefgh234567", 4) + ".onion"
	if s != want {
		t.Fatalf("String() = %q, want %q", s, want)
	}
	got, err := ParseAddress(s)
	if err != nil || !slices.Equal(got.Hosts(), a.Hosts()) || got.Pin != pin {
		t.Fatalf("ParseAddress(%q) = %+v, %v", s, got, err)
	}
	if got.Onion() || !got.AnyOnion() {
		t.Errorf("Onion() = %v (first host), AnyOnion() = %v; want false, true", got.Onion(), got.AnyOnion())
	}
	eps := got.Endpoints()
	if len(eps) != 3 || eps[1].Host != "[2001:db8::1]:4433" || eps[1].More != nil || eps[1].Pin != pin || !eps[2].Onion() {
		t.Errorf("Endpoints() = %+v", eps)
	}
	// The single form is unchanged: no More, and it prints as before.
	one, err := ParseAddress("qpc://" + s[6:49] + "@n1.example.org:4433")
	if err != nil || one.More != nil || one.String() != "qpc://"+s[6:49]+"@n1.example.org:4433" {
		t.Errorf("single form: %+v, %v", one, err)
	}
}

// TestAddressVectors checks testdata/address/good_*.txt (parse, and print
// back the same text) and fail_*.txt (ErrBadAddress).
func TestAddressVectors(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "address", "*.txt"))
	good, fail := 0, 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		in := strings.TrimSuffix(string(raw), "\n")
		a, err := ParseAddress(in)
		switch name := filepath.Base(f); {
		case strings.HasPrefix(name, "good_"):
			good++
			if err != nil {
				t.Errorf("%s: %v", name, err)
			} else if a.String() != in {
				t.Errorf("%s: prints back as %q", name, a.String())
			}
		case strings.HasPrefix(name, "fail_"):
			fail++
			if !errors.Is(err, ErrBadAddress) {
				t.Errorf("%s: %+v, %v; want ErrBadAddress", name, a, err)
			}
		}
	}
	if good < 5 || fail < 10 {
		t.Fatalf("testdata/address has %d good and %d fail vectors", good, fail)
	}
}

// FuzzParseAddress: any text parses or fails with ErrBadAddress; what
// parses has at most MaxEndpoints distinct endpoints, none a name under
// .onion but an onion's, and prints back to text that parses to the same
// address.
func FuzzParseAddress(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "address", "*.txt"))
	for _, p := range files {
		raw, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(strings.TrimSuffix(string(raw), "\n"))
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddress(s)
		if err != nil {
			if !errors.Is(err, ErrBadAddress) {
				t.Fatalf("ParseAddress(%q) = %v, not ErrBadAddress", s, err)
			}
			return
		}
		hosts := a.Hosts()
		if len(hosts) > MaxEndpoints {
			t.Fatalf("%d endpoints", len(hosts))
		}
		for i, h := range hosts {
			if slices.Contains(hosts[:i], h) {
				t.Fatalf("endpoint %q twice", h)
			}
			// A name under .onion is an onion, dialled through Tor.
			if name, _, err := net.SplitHostPort(h); err != nil || inOnionDomain(name) && !IsOnionHost(name) {
				t.Fatalf("endpoint %q: a name under .onion that is no onion, or no host:port (%v)", h, err)
			}
		}
		b, err := ParseAddress(a.String())
		if err != nil || b.Pin != a.Pin || !slices.Equal(b.Hosts(), hosts) {
			t.Fatalf("%q printed as %q parses to %+v, %v", s, a.String(), b, err)
		}
	})
}

// TestAttackOnionLookalikeRefused plays whoever writes an address for a
// client (a hostile contact's invite, a pasted link): a host that names
// an onion service to Tor and to the resolver (a subdomain of a v3 onion,
// which Tor serves as the onion; a trailing dot; both) but is not
// spelled as one was taken for a clearnet host, so a list of such
// endpoints was dialled without Tor (a resolver that does not hold .onion
// back, RFC 7686 §2, then asks DNS for it). Any name ending in .onion
// must be a v3 onion or refused.
func TestAttackOnionLookalikeRefused(t *testing.T) {
	id := strings.Repeat("abcdefgh234567", 4)
	pin := base64.RawURLEncoding.EncodeToString(make([]byte, PinSize))
	for _, host := range []string{
		"www." + id + ".onion:4433",
		id + ".onion.:4433",
		strings.ToUpper(id) + ".ONION.:4433",
		"www." + id + ".onion.:8443",
		"[" + id + ".onion.]:4433",
		id + ".onion.",
		"n1.example.org:4433,www." + id + ".onion:4433",
	} {
		a, err := ParseAddress("qpc://" + pin + "@" + host)
		if err == nil {
			t.Errorf("ParseAddress(%q) = %v (through Tor: %v); want ErrBadAddress for a name in .onion that is no v3 onion", host, a, a.AnyOnion())
		} else if !errors.Is(err, ErrBadAddress) {
			t.Errorf("ParseAddress(%q): %v; want ErrBadAddress", host, err)
		}
	}
	// The real onion still parses, and a clearnet name merely containing
	// "onion" is a clearnet name.
	for _, host := range []string{id + ".onion", "onion.example.org:4433", "myonion:4433"} {
		if _, err := ParseAddress("qpc://" + pin + "@" + host); err != nil {
			t.Errorf("ParseAddress(%q): %v", host, err)
		}
	}
}
