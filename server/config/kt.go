package config

import (
	"fmt"
	"os"
	"time"

	"github.com/quicprochat/qpc/kt"
)

// KTSettings bound what key-transparency publishes and lookups may cost
// (docs/key-transparency.md §7, docs/operations.md "Limits"), embedded in
// Config so that they decode from the same TOML table.
type KTSettings struct {
	KTPublishRate     float64 `toml:"kt_publish_rate"`      // publishes per hour per account
	KTPublishBurst    int     `toml:"kt_publish_burst"`     // and at once
	KTMaxPending      int     `toml:"kt_max_pending"`       // publishes queued for the next epoch
	KTMaxVersions     int     `toml:"kt_max_versions"`      // versions of one handle
	KTProofCache      int     `toml:"kt_proof_cache"`       // VRF proofs kept in memory
	KTProofRate       float64 `toml:"kt_proof_rate"`        // VRF proofs per second one connection's lookups may cost
	KTProofBurst      int     `toml:"kt_proof_burst"`       // and at once
	KTProofRateTotal  float64 `toml:"kt_proof_rate_total"`  // the same, all connections
	KTProofBurstTotal int     `toml:"kt_proof_burst_total"` // and at once

	// Witnesses (docs/key-transparency.md §1.6).
	KTWitnessPolicy   string   `toml:"kt_witness_policy"`    // path of the witness policy file, or off
	KTWitnessTimeout  Duration `toml:"kt_witness_timeout"`   // how long one checkpoint waits for cosignatures
	KTWitnessFailOpen bool     `toml:"kt_witness_fail_open"` // publish without a quorum after the timeout
}

func defaultKTSettings() KTSettings {
	return KTSettings{
		KTPublishRate: DefaultKTPublishRate, KTPublishBurst: DefaultKTPublishBurst,
		KTMaxPending: kt.DefaultMaxPending, KTMaxVersions: kt.DefaultMaxVersions, KTProofCache: kt.DefaultProofCache,
		KTProofRate: DefaultKTProofRate, KTProofBurst: DefaultKTProofBurst,
		KTProofRateTotal: DefaultKTProofRateTotal, KTProofBurstTotal: DefaultKTProofBurstTotal,
		KTWitnessTimeout: Duration{kt.DefaultWitnessTimeout}, KTWitnessPolicy: AdminOff,
	}
}

// KTWitnessPolicyParsed reads and parses the witness policy file (nil when
// kt_witness_policy is off or empty). The log needs a URL on every witness line.
func (c *Config) KTWitnessPolicyParsed() (*kt.WitnessPolicy, error) {
	if c.KTWitnessPolicy == "" || c.KTWitnessPolicy == AdminOff {
		return nil, nil
	}
	b, err := os.ReadFile(c.KTWitnessPolicy)
	if err != nil {
		return nil, fmt.Errorf("kt_witness_policy: %w", err)
	}
	p, err := kt.ParseWitnessPolicy(string(b))
	if err != nil {
		return nil, fmt.Errorf("kt_witness_policy %s: %w", c.KTWitnessPolicy, err)
	}
	for _, w := range p.Witnesses() {
		if w.URL == "" {
			return nil, fmt.Errorf("kt_witness_policy %s: witness %s has no URL to submit checkpoints to", c.KTWitnessPolicy, w.Name)
		}
	}
	return p, nil
}

// KTDirectoryLimits sets the directory's bounds of the configuration.
func (c *Config) KTDirectoryLimits(o *kt.DirectoryOptions) {
	o.MaxPending = c.KTMaxPending
	o.MaxVersions = uint32(c.KTMaxVersions)
	o.ProofCache = c.KTProofCache
	if o.ProofCache == 0 {
		o.ProofCache = -1 // kt_proof_cache = 0: no cache
	}
	o.WitnessTimeout = c.KTWitnessTimeout.Duration
	o.WitnessFailOpen = c.KTWitnessFailOpen
}

var ktConfigFields = []configField{
	{
		key:   "kt_publish_rate",
		help:  "key-transparency publishes per hour one account may make (a client publishes a few times a year)",
		parse: func(c *Config, s string) error { return parseFloat(&c.KTPublishRate, s) },
		copy:  func(d, s *Config) { d.KTPublishRate = s.KTPublishRate },
		check: func(c *Config) error { return checkRate(c.KTPublishRate) },
		value: func(c *Config) any { return c.KTPublishRate },
	},
	{
		key:   "kt_publish_burst",
		help:  "key-transparency publishes one account may make at once before kt_publish_rate applies",
		parse: func(c *Config, s string) error { return parseInt(&c.KTPublishBurst, s) },
		copy:  func(d, s *Config) { d.KTPublishBurst = s.KTPublishBurst },
		check: func(c *Config) error { return checkRange(int64(c.KTPublishBurst), 1, 1_000_000) },
		value: func(c *Config) any { return c.KTPublishBurst },
	},
	{
		key:   "kt_max_pending",
		help:  "key-transparency publishes queued for the next epochs, all accounts together (up to 16 KiB each); more are answered UNAVAILABLE",
		parse: func(c *Config, s string) error { return parseInt(&c.KTMaxPending, s) },
		copy:  func(d, s *Config) { d.KTMaxPending = s.KTMaxPending },
		check: func(c *Config) error { return checkRange(int64(c.KTMaxPending), 1, 1_000_000) },
		value: func(c *Config) any { return c.KTMaxPending },
	},
	{
		key:   "kt_max_versions",
		help:  "key-transparency versions one handle may reach (the log keeps them all, up to 16 KiB each); more are refused with QUOTA",
		parse: func(c *Config, s string) error { return parseInt(&c.KTMaxVersions, s) },
		copy:  func(d, s *Config) { d.KTMaxVersions = s.KTMaxVersions },
		check: func(c *Config) error { return checkRange(int64(c.KTMaxVersions), 1, kt.MaxVersion) },
		value: func(c *Config) any { return c.KTMaxVersions },
	},
	{
		key:   "kt_proof_cache",
		help:  "VRF proofs of key-transparency lookups kept in memory (about 256 bytes each; 0: none), so that a repeated lookup costs no proof",
		parse: func(c *Config, s string) error { return parseInt(&c.KTProofCache, s) },
		copy:  func(d, s *Config) { d.KTProofCache = s.KTProofCache },
		check: func(c *Config) error { return checkRange(int64(c.KTProofCache), 0, 100_000_000) },
		value: func(c *Config) any { return c.KTProofCache },
	},
	{
		key:   "kt_proof_rate",
		help:  "VRF proofs per second one connection's key-transparency lookups may make the server compute (a lookup of a label not asked for before costs up to 20, about 0.3 ms of a core each)",
		parse: func(c *Config, s string) error { return parseFloat(&c.KTProofRate, s) },
		copy:  func(d, s *Config) { d.KTProofRate = s.KTProofRate },
		check: func(c *Config) error { return checkRate(c.KTProofRate) },
		value: func(c *Config) any { return c.KTProofRate },
	},
	{
		key:   "kt_proof_burst",
		help:  "VRF proofs one connection's lookups may cost at once before kt_proof_rate applies; more are answered RATE_LIMITED",
		parse: func(c *Config, s string) error { return parseInt(&c.KTProofBurst, s) },
		copy:  func(d, s *Config) { d.KTProofBurst = s.KTProofBurst },
		check: func(c *Config) error { return checkRange(int64(c.KTProofBurst), 20, 1_000_000) },
		value: func(c *Config) any { return c.KTProofBurst },
	},
	{
		key:   "kt_proof_rate_total",
		help:  "VRF proofs per second all key-transparency lookups together may make the server compute",
		parse: func(c *Config, s string) error { return parseFloat(&c.KTProofRateTotal, s) },
		copy:  func(d, s *Config) { d.KTProofRateTotal = s.KTProofRateTotal },
		check: func(c *Config) error { return checkRate(c.KTProofRateTotal) },
		value: func(c *Config) any { return c.KTProofRateTotal },
	},
	{
		key:   "kt_proof_burst_total",
		help:  "VRF proofs all lookups together may cost at once before kt_proof_rate_total applies; more are answered UNAVAILABLE",
		parse: func(c *Config, s string) error { return parseInt(&c.KTProofBurstTotal, s) },
		copy:  func(d, s *Config) { d.KTProofBurstTotal = s.KTProofBurstTotal },
		check: func(c *Config) error { return checkRange(int64(c.KTProofBurstTotal), 20, 1_000_000) },
		value: func(c *Config) any { return c.KTProofBurstTotal },
	},
	{
		key:   "kt_witness_policy",
		help:  "path of the key-transparency witness policy (witness <name> <vkey> <url>, group <name> <k> <members>, quorum <name>): each checkpoint is published only once a quorum of these witnesses cosigned it; off: no witnesses",
		parse: func(c *Config, s string) error { c.KTWitnessPolicy = s; return nil },
		copy:  func(d, s *Config) { d.KTWitnessPolicy = s.KTWitnessPolicy },
		check: func(c *Config) error { _, err := c.KTWitnessPolicyParsed(); return err },
		value: func(c *Config) any { return c.KTWitnessPolicy },
	},
	{
		key:   "kt_witness_timeout",
		help:  "how long one key-transparency checkpoint waits for the witnesses' cosignatures before it is tried again (or, with kt_witness_fail_open, published without them)",
		parse: func(c *Config, s string) error { return c.KTWitnessTimeout.UnmarshalText([]byte(s)) },
		copy:  func(d, s *Config) { d.KTWitnessTimeout = s.KTWitnessTimeout },
		check: func(c *Config) error {
			return checkDuration(c.KTWitnessTimeout.Duration, 100*time.Millisecond, time.Minute)
		},
		value: func(c *Config) any { return c.KTWitnessTimeout },
	},
	{
		key:   "kt_witness_fail_open",
		help:  "false (publish late): without a witness quorum no checkpoint is published and lookups stay at the last cosigned one; true: publish it uncosigned after kt_witness_timeout, with a WARN and qpc_kt_unwitnessed_checkpoints_total (clients pinned to the policy refuse it)",
		parse: func(c *Config, s string) error { return parseBool(&c.KTWitnessFailOpen, s) },
		copy:  func(d, s *Config) { d.KTWitnessFailOpen = s.KTWitnessFailOpen },
		check: func(c *Config) error { return nil },
		value: func(c *Config) any { return c.KTWitnessFailOpen },
	},
}
