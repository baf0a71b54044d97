package config

import "testing"

func TestKTListenConfig(t *testing.T) {
	for _, tc := range []struct {
		listen    string
		onionOnly bool
		ok        bool
	}{
		{"127.0.0.1:4480", false, true},
		{"off", false, true},
		{"0.0.0.0:4480", false, true},
		{"127.0.0.1", false, false},
		{"0.0.0.0:4480", true, false},
		{"127.0.0.1:0", true, true},
	} {
		c := Default()
		c.KTListen, c.OnionOnly = tc.listen, tc.onionOnly
		err := fieldByKey("kt_listen").check(&c)
		if (err == nil) != tc.ok {
			t.Errorf("kt_listen %q onion-only %v: %v", tc.listen, tc.onionOnly, err)
		}
	}
}
