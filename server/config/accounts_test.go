package config

import (
	"fmt"
	"testing"
	"time"

	"github.com/quicprochat/qpc/server/accounts"
)

// TestAccountOptions: the defaults of the login and registration limits
// are the package's, and each setting reaches accounts.Options.
func TestAccountOptions(t *testing.T) {
	c := Default()
	o := c.AccountOptions()
	want := accounts.Options{
		MaxFailures: accounts.DefaultMaxFailures, FailureWindow: accounts.DefaultFailureWindow,
		GlobalRate: accounts.DefaultGlobalRate, GlobalBurst: accounts.DefaultGlobalBurst,
		SourceRate: accounts.DefaultSourceRate, SourceBurst: accounts.DefaultSourceBurst,
		RegisterRate: accounts.DefaultRegisterRate, RegisterBurst: accounts.DefaultRegisterBurst,
		RegisterSourceRate: accounts.DefaultRegisterSourceRate, RegisterSourceBurst: accounts.DefaultRegisterSourceBurst,
	}
	if !sameOptions(o, want) {
		t.Fatalf("defaults: %+v, want %+v", o, want)
	}
	for key, val := range map[string]string{
		"login_rate": "7", "login_burst": "8", "login_source_rate": "0.5", "login_source_burst": "3",
		"login_failures": "4", "login_failure_window": "1h", "register_rate": "1.5", "register_burst": "6",
		"register_source_rate": "0.01", "register_source_burst": "2",
	} {
		if err := fieldByKey(key).parse(&c, val); err != nil {
			t.Fatalf("%s = %s: %v", key, val, err)
		}
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want = accounts.Options{
		MaxFailures: 4, FailureWindow: time.Hour, GlobalRate: 7, GlobalBurst: 8, SourceRate: 0.5, SourceBurst: 3,
		RegisterRate: 1.5, RegisterBurst: 6, RegisterSourceRate: 0.01, RegisterSourceBurst: 2,
	}
	if o := c.AccountOptions(); !sameOptions(o, want) {
		t.Fatalf("set: %+v, want %+v", o, want)
	}
	if err := fieldByKey("login_rate").parse(&c, "0"); err != nil {
		t.Fatal(err)
	}
	if c.Validate() == nil {
		t.Fatal("login_rate = 0 accepted")
	}
}

// sameOptions compares everything but the clock (a func, not comparable).
func sameOptions(a, b accounts.Options) bool {
	a.Now, b.Now = nil, nil
	return fmt.Sprintf("%+v", a) == fmt.Sprintf("%+v", b)
}
