package wire

import (
	"errors"
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
