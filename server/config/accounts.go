package config

import (
	"fmt"
	"time"

	"github.com/quicprochat/qpc/server/accounts"
)

// AccountSettings are the limits of registrations and logins (package
// server/accounts, docs/operations.md "Logins and registrations"),
// embedded in Config so that they decode from the same TOML table.
type AccountSettings struct {
	LoginRate           float64  `toml:"login_rate"`            // LoginStarts per second, all sources
	LoginBurst          int      `toml:"login_burst"`           // and at once
	LoginSourceRate     float64  `toml:"login_source_rate"`     // LoginStarts per second from one source
	LoginSourceBurst    int      `toml:"login_source_burst"`    // and at once
	LoginFailures       int      `toml:"login_failures"`        // unproven logins of a username per source per window
	LoginFailureWindow  Duration `toml:"login_failure_window"`  // the window
	RegisterRate        float64  `toml:"register_rate"`         // RegisterStarts per second, all sources
	RegisterBurst       int      `toml:"register_burst"`        // and at once
	RegisterSourceRate  float64  `toml:"register_source_rate"`  // RegisterStarts per second from one source
	RegisterSourceBurst int      `toml:"register_source_burst"` // and at once
}

func defaultAccountSettings() AccountSettings {
	return AccountSettings{
		LoginRate: accounts.DefaultGlobalRate, LoginBurst: accounts.DefaultGlobalBurst,
		LoginSourceRate: accounts.DefaultSourceRate, LoginSourceBurst: accounts.DefaultSourceBurst,
		LoginFailures: accounts.DefaultMaxFailures, LoginFailureWindow: Duration{accounts.DefaultFailureWindow},
		RegisterRate: accounts.DefaultRegisterRate, RegisterBurst: accounts.DefaultRegisterBurst,
		RegisterSourceRate: accounts.DefaultRegisterSourceRate, RegisterSourceBurst: accounts.DefaultRegisterSourceBurst,
	}
}

// AccountOptions are the accounts.Options of the configuration; the
// caller adds the clock, if any.
func (c *Config) AccountOptions() accounts.Options {
	a := c.AccountSettings
	return accounts.Options{
		MaxFailures: a.LoginFailures, FailureWindow: a.LoginFailureWindow.Duration,
		GlobalRate: a.LoginRate, GlobalBurst: a.LoginBurst,
		SourceRate: a.LoginSourceRate, SourceBurst: a.LoginSourceBurst,
		RegisterRate: a.RegisterRate, RegisterBurst: a.RegisterBurst,
		RegisterSourceRate: a.RegisterSourceRate, RegisterSourceBurst: a.RegisterSourceBurst,
	}
}

// checkRate keeps a rate per second within 0.001..1,000,000.
func checkRate(r float64) error {
	if !(r >= 0.001 && r <= 1e6) {
		return fmt.Errorf("%v is outside 0.001..1000000", r)
	}
	return nil
}

var accountConfigFields = []configField{
	{
		key:   "login_rate",
		help:  "logins (OPAQUE LoginStarts) and password changes per second the whole server answers; each costs about 0.6 ms of a core",
		parse: func(c *Config, s string) error { return parseFloat(&c.LoginRate, s) },
		copy:  func(d, s *Config) { d.LoginRate = s.LoginRate },
		check: func(c *Config) error { return checkRate(c.LoginRate) },
		value: func(c *Config) any { return c.LoginRate },
	},
	{
		key:   "login_burst",
		help:  "logins the whole server answers at once before login_rate applies",
		parse: func(c *Config, s string) error { return parseInt(&c.LoginBurst, s) },
		copy:  func(d, s *Config) { d.LoginBurst = s.LoginBurst },
		check: func(c *Config) error { return checkRange(int64(c.LoginBurst), 1, 1_000_000) },
		value: func(c *Config) any { return c.LoginBurst },
	},
	{
		key:   "login_source_rate",
		help:  "logins per second from one source (an IPv4 address, an IPv6 /64, or one onion connection), so that one source cannot spend login_rate",
		parse: func(c *Config, s string) error { return parseFloat(&c.LoginSourceRate, s) },
		copy:  func(d, s *Config) { d.LoginSourceRate = s.LoginSourceRate },
		check: func(c *Config) error { return checkRate(c.LoginSourceRate) },
		value: func(c *Config) any { return c.LoginSourceRate },
	},
	{
		key:   "login_source_burst",
		help:  "logins one source may start at once before login_source_rate applies",
		parse: func(c *Config, s string) error { return parseInt(&c.LoginSourceBurst, s) },
		copy:  func(d, s *Config) { d.LoginSourceBurst = s.LoginSourceBurst },
		check: func(c *Config) error { return checkRange(int64(c.LoginSourceBurst), 1, 1_000_000) },
		value: func(c *Config) any { return c.LoginSourceBurst },
	},
	{
		key:   "login_failures",
		help:  "unproven logins (password not proven) of one username from one source per login_failure_window; more are refused from that source only; ten times as many from all sources together cut each source's allowance to 2",
		parse: func(c *Config, s string) error { return parseInt(&c.LoginFailures, s) },
		copy:  func(d, s *Config) { d.LoginFailures = s.LoginFailures },
		check: func(c *Config) error { return checkRange(int64(c.LoginFailures), 1, 10_000) },
		value: func(c *Config) any { return c.LoginFailures },
	},
	{
		key:   "login_failure_window",
		help:  "how long an unproven login counts against login_failures",
		parse: func(c *Config, s string) error { return c.LoginFailureWindow.UnmarshalText([]byte(s)) },
		copy:  func(d, s *Config) { d.LoginFailureWindow = s.LoginFailureWindow },
		check: func(c *Config) error { return checkDuration(c.LoginFailureWindow.Duration, time.Minute, 24*time.Hour) },
		value: func(c *Config) any { return c.LoginFailureWindow },
	},
	{
		key:   "register_rate",
		help:  "registrations per second the whole server answers, a budget apart from login_rate so that registrations cannot starve logins",
		parse: func(c *Config, s string) error { return parseFloat(&c.RegisterRate, s) },
		copy:  func(d, s *Config) { d.RegisterRate = s.RegisterRate },
		check: func(c *Config) error { return checkRate(c.RegisterRate) },
		value: func(c *Config) any { return c.RegisterRate },
	},
	{
		key:   "register_burst",
		help:  "registrations the whole server answers at once before register_rate applies",
		parse: func(c *Config, s string) error { return parseInt(&c.RegisterBurst, s) },
		copy:  func(d, s *Config) { d.RegisterBurst = s.RegisterBurst },
		check: func(c *Config) error { return checkRange(int64(c.RegisterBurst), 1, 1_000_000) },
		value: func(c *Config) any { return c.RegisterBurst },
	},
	{
		key:   "register_source_rate",
		help:  "registrations per second from one source; bounds the accounts one stranger can create",
		parse: func(c *Config, s string) error { return parseFloat(&c.RegisterSourceRate, s) },
		copy:  func(d, s *Config) { d.RegisterSourceRate = s.RegisterSourceRate },
		check: func(c *Config) error { return checkRate(c.RegisterSourceRate) },
		value: func(c *Config) any { return c.RegisterSourceRate },
	},
	{
		key:   "register_source_burst",
		help:  "registrations one source may start at once before register_source_rate applies",
		parse: func(c *Config, s string) error { return parseInt(&c.RegisterSourceBurst, s) },
		copy:  func(d, s *Config) { d.RegisterSourceBurst = s.RegisterSourceBurst },
		check: func(c *Config) error { return checkRange(int64(c.RegisterSourceBurst), 1, 1_000_000) },
		value: func(c *Config) any { return c.RegisterSourceBurst },
	},
}
