package protocol

import "testing"

func TestThousands(t *testing.T) {
	for x, want := range map[float64]string{
		0: "0", 7: "7", 999.6: "1,000", 4320.000000001: "4,320", 123456: "123,456",
		1234567: "1,234,567", -4321: "-4,321",
	} {
		if got := Thousands(x); got != want {
			t.Errorf("Thousands(%v) = %q, want %q", x, got, want)
		}
	}
}
