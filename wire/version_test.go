package wire

import (
	"slices"
	"testing"
)

func TestNegotiate(t *testing.T) {
	for _, c := range []struct {
		ours, theirs []uint16
		want         uint16
		ok           bool
	}{
		{[]uint16{2, 1}, []uint16{1, 2}, 2, true},
		{[]uint16{2, 1}, []uint16{1}, 1, true},
		{[]uint16{2, 1}, []uint16{3, 2}, 2, true},
		{[]uint16{1}, []uint16{2, 3}, 0, false},
		{[]uint16{1}, nil, 0, false},
	} {
		got, ok := Negotiate(c.ours, c.theirs)
		if got != c.want || ok != c.ok {
			t.Errorf("Negotiate(%v, %v) = %d, %v; want %d, %v", c.ours, c.theirs, got, ok, c.want, c.ok)
		}
	}
}

func TestALPN(t *testing.T) {
	if ALPNFor(ProtocolVersion) != ALPN {
		t.Errorf("ALPNFor(%d) = %q, want the ALPN constant %q", ProtocolVersion, ALPNFor(ProtocolVersion), ALPN)
	}
	if got := ALPNs([]uint16{2, 1}); !slices.Equal(got, []string{"qpc/2", "qpc/1"}) {
		t.Errorf("ALPNs = %v", got)
	}
	for s, want := range map[string]uint16{"qpc/1": 1, "qpc/2": 2, "qpc/65535": 65535} {
		if v, ok := ParseALPN(s); !ok || v != want {
			t.Errorf("ParseALPN(%q) = %d, %v", s, v, ok)
		}
	}
	for _, s := range []string{"", "qpc/", "qpc/0", "qpc/01", "qpc/65536", "qpc/-1", "h3", "QPC/1", "qpc/1 "} {
		if v, ok := ParseALPN(s); ok {
			t.Errorf("ParseALPN(%q) = %d, want refusal", s, v)
		}
	}
}

func TestCheckVersionWindow(t *testing.T) {
	for _, vs := range [][]uint16{{1}, {2, 1}, {9, 8}} {
		if err := CheckVersionWindow(vs); err != nil {
			t.Errorf("%v: %v", vs, err)
		}
	}
	for _, vs := range [][]uint16{nil, {0}, {1, 0}, {1, 2}, {3, 1}, {3, 2, 1}, {2, 2}} {
		if err := CheckVersionWindow(vs); err == nil {
			t.Errorf("%v accepted", vs)
		}
	}
	if v := SupportedVersions(); len(v) == 0 || v[0] != ProtocolVersion || CheckVersionWindow(v) != nil {
		t.Errorf("SupportedVersions() = %v", v)
	}
}
