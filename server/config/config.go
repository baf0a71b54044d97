package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/wire"
)

// Files inside the data directory.
const (
	FileName  = "qpc-server.toml"
	StoreFile = "qpc.db"
)

// AdminOff turns off admin_listen, kt_listen and kt_witness_policy.
const AdminOff = "off"

// ObserverOff turns off observer_record, its default (an empty value
// would read as unset in the environment).
const ObserverOff = "off"

// EnvPrefix starts every environment variable the configuration reads:
// QPC_ followed by the upper-cased TOML key (QPC_LISTEN, QPC_DATA_DIR, ...).
const EnvPrefix = "QPC_"

// Config is the whole configuration of qpc-server. It is built by
// Load from, in increasing precedence: Default, the TOML file
// <data dir>/qpc-server.toml, QPC_* environment variables and command-line
// flags. Every value remembers where it came from (Source), so that errors
// and the rendered configuration can say so.
type Config struct {
	Listen    string `toml:"listen"`     // UDP host:port
	DataDir   string `toml:"data_dir"`   // never read from the file, which lives inside it
	LogLevel  string `toml:"log_level"`  // debug, info, warn, error
	LogFormat string `toml:"log_format"` // text or json

	Buckets       []int    `toml:"buckets"` // padding policy, ascending bytes
	QuotaMessages int      `toml:"quota_messages"`
	QuotaBytes    int64    `toml:"quota_bytes"`
	MessageTTL    Duration `toml:"message_ttl"`
	MailboxTTL    Duration `toml:"mailbox_ttl"`
	PurgeInterval Duration `toml:"purge_interval"`

	MaxStreams        int      `toml:"max_streams"`
	MaxConns          int      `toml:"max_conns"`
	MaxConnsPerAddr   int      `toml:"max_conns_per_addr"`
	MaxConnsPerNet    int      `toml:"max_conns_per_net"`
	MaxConnsTor       int      `toml:"max_conns_tor"` // 0: half of max_conns
	DeliveryBytes     int64    `toml:"delivery_bytes"`
	DeliveryConnBytes int64    `toml:"delivery_conn_bytes"`
	DeliverySrcBytes  int64    `toml:"delivery_source_bytes"`
	MaxStreamsPerAddr int      `toml:"max_streams_per_addr"`
	MaxStreamsTotal   int      `toml:"max_streams_total"`
	RequestBytes      int64    `toml:"request_bytes"`
	RequestConnBytes  int64    `toml:"request_conn_bytes"`
	RequestSrcBytes   int64    `toml:"request_source_bytes"`
	RequestRate       float64  `toml:"request_rate"`
	RequestBurst      int      `toml:"request_burst"`
	AdminListen       string   `toml:"admin_listen"` // TCP host:port of /healthz, /readyz, /metrics, or "off"
	HandshakeTimeout  Duration `toml:"handshake_timeout"`
	IdleTimeout       Duration `toml:"idle_timeout"`
	RequestTimeout    Duration `toml:"request_timeout"`
	ShutdownTimeout   Duration `toml:"shutdown_timeout"`

	StoreMaxBatch int    `toml:"store_max_batch"`
	Store         string `toml:"store"` // StoreBolt or a postgres:// URL

	KT           bool     `toml:"kt"`             // keep the key-transparency directory (docs/key-transparency.md)
	KTListen     string   `toml:"kt_listen"`      // TCP host:port of the read-only tlog-tiles listener, or "off"
	KTPrefix     string   `toml:"kt_prefix"`      // URL prefix of the tiles
	KTEpoch      Duration `toml:"kt_epoch"`       // epoch cadence
	KTMinUpdates int      `toml:"kt_min_updates"` // leaves per epoch, real or padding

	RequireTokens bool     `toml:"require_tokens"` // false only for tests and benchmarks
	TokenEpoch    Duration `toml:"token_epoch"`
	TokenQuota    int      `toml:"token_quota"`

	KeyPackagePool int `toml:"key_package_pool"` // one-time KeyPackages per account (docs/protocol.md §4.12)

	// ObserverRecord is the file of the traffic-analysis lab's observer
	// record (server/observer.go), or ObserverOff. Research only: never
	// set in a packaged configuration.
	ObserverRecord string `toml:"observer_record"`

	TorSettings     // onion service and Tor keys (tor.go)
	AccountSettings // limits of registrations and logins (accounts.go)
	KTSettings      // limits of key-transparency publishes and lookups (kt.go)

	sources map[string]Source
}

// Duration is a time.Duration written in TOML as a Go duration string
// ("504h", "10m", "1.5s"). A bare integer is refused rather than read as
// nanoseconds, which is never what an operator means.
type Duration struct{ time.Duration }

// UnmarshalText parses a duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration (write it like \"504h\", \"10m\" or \"30s\")", b)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration without zero trailing units: "504h"
// rather than "504h0m0s".
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

func (d Duration) String() string {
	s := d.Duration.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// SourceKind says which layer a configuration value came from.
type SourceKind int

// Layers in increasing precedence.
const (
	FromDefault SourceKind = iota
	FromFile
	FromEnv
	FromFlag
)

// Source is where one configuration value came from: the layer, and the
// flag, variable or file that held it.
type Source struct {
	Kind SourceKind
	Name string // "--listen", "QPC_LISTEN", the file's path; empty for defaults
}

// String is the form used in errors: "flag --listen", "env QPC_LISTEN",
// "file ./qpc-data/qpc-server.toml" or "default".
func (s Source) String() string {
	switch s.Kind {
	case FromFlag:
		return "flag " + s.Name
	case FromEnv:
		return "env " + s.Name
	case FromFile:
		return "file " + s.Name
	}
	return "default"
}

// annotation is the comment the rendered configuration puts after a value.
func (s Source) annotation() string {
	switch s.Kind {
	case FromFlag:
		return "# from flag"
	case FromEnv:
		return "# from env " + s.Name
	case FromFile:
		return "# from file"
	}
	return "# default"
}

// Source returns where the value of the TOML key came from.
func (c *Config) Source(key string) Source { return c.sources[key] }

// EnvName is the environment variable of a TOML key: QPC_ + KEY.
func EnvName(key string) string { return EnvPrefix + strings.ToUpper(key) }

// FlagName is the command-line flag of a TOML key, without dashes:
// message_ttl becomes message-ttl.
func FlagName(key string) string { return strings.ReplaceAll(key, "_", "-") }

// Default returns the built-in defaults, all marked FromDefault.
func Default() Config {
	return Config{
		Listen:            "127.0.0.1:4433",
		DataDir:           "./qpc-data",
		LogLevel:          "info",
		LogFormat:         "text",
		Buckets:           padding.Default.Buckets(),
		QuotaMessages:     DefaultQuotaMessages,
		QuotaBytes:        DefaultQuotaBytes,
		MessageTTL:        Duration{DefaultMessageTTL},
		MailboxTTL:        Duration{DefaultMailboxTTL},
		PurgeInterval:     Duration{DefaultPurgeInterval},
		MaxStreams:        DefaultMaxStreams,
		MaxConns:          DefaultMaxConns,
		MaxConnsPerAddr:   DefaultMaxConnsPerAddr,
		MaxConnsPerNet:    DefaultMaxConnsPerNet,
		DeliveryBytes:     DefaultDeliveryBytes,
		DeliveryConnBytes: DefaultDeliveryConnBytes,
		MaxStreamsPerAddr: DefaultMaxStreamsPerAddr,
		MaxStreamsTotal:   DefaultMaxStreamsTotal,
		RequestBytes:      DefaultRequestBytes,
		RequestConnBytes:  DefaultRequestConnBytes,
		RequestRate:       DefaultRequestRate,
		RequestBurst:      DefaultRequestBurst,
		AdminListen:       DefaultAdminListen,
		KT:                true,
		KTListen:          DefaultKTListen,
		KTPrefix:          "/kt",
		KTEpoch:           Duration{kt.DefaultEpochInterval},
		KTMinUpdates:      kt.DefaultMinUpdates,
		HandshakeTimeout:  Duration{DefaultHandshakeTimeout},
		IdleTimeout:       Duration{DefaultIdleTimeout},
		RequestTimeout:    Duration{DefaultRequestTimeout},
		ShutdownTimeout:   Duration{DefaultShutdownTimeout},
		StoreMaxBatch:     store.DefaultMaxBatch,
		Store:             StoreBolt,
		RequireTokens:     true,
		TokenEpoch:        Duration{tokens.DefaultEpochLength},
		TokenQuota:        DefaultTokenQuota,
		KeyPackagePool:    DefaultKeyPackagePool,
		ObserverRecord:    ObserverOff,
		TorSettings:       defaultTorSettings(),
		AccountSettings:   defaultAccountSettings(),
		KTSettings:        defaultKTSettings(),
		sources:           map[string]Source{},
	}
}

// configField ties one TOML key to its Go field: how to parse it from a
// flag or environment string, how to check it, and its help text. One
// table drives flags, environment, file, validation and rendering, so a
// new field cannot be half wired.
type configField struct {
	key   string
	help  string
	parse func(c *Config, s string) error // flag and environment text
	copy  func(dst, src *Config)          // take the field from a decoded file
	check func(c *Config) error           // nil if the value is valid
	value func(c *Config) any             // the value to render as TOML
}

var configFields = append([]configField{
	{
		key:   "listen",
		help:  "UDP address to serve QUIC on, host:port (port 0 picks a free port)",
		parse: func(c *Config, s string) error { c.Listen = s; return nil },
		copy:  func(d, s *Config) { d.Listen = s.Listen },
		check: func(c *Config) error { return checkListen(c.Listen) },
		value: func(c *Config) any { return c.Listen },
	},
	{
		key:   "data_dir",
		help:  "directory of the server key, qpc-server.toml and the message store",
		parse: func(c *Config, s string) error { c.DataDir = s; return nil },
		copy:  func(d, s *Config) { d.DataDir = s.DataDir },
		check: func(c *Config) error {
			if c.DataDir == "" {
				return errors.New("must not be empty")
			}
			return nil
		},
		value: func(c *Config) any { return c.DataDir },
	},
	{
		key:   "log_level",
		help:  "debug, info, warn or error; nothing above debug names a mailbox, message, key or client",
		parse: func(c *Config, s string) error { c.LogLevel = strings.ToLower(s); return nil },
		copy:  func(d, s *Config) { d.LogLevel = strings.ToLower(s.LogLevel) },
		check: func(c *Config) error {
			if _, ok := logLevels[strings.ToLower(c.LogLevel)]; !ok {
				return fmt.Errorf("%q is not one of debug, info, warn, error", c.LogLevel)
			}
			return nil
		},
		value: func(c *Config) any { return c.LogLevel },
	},
	{
		key:   "log_format",
		help:  "text or json, written to stderr",
		parse: func(c *Config, s string) error { c.LogFormat = strings.ToLower(s); return nil },
		copy:  func(d, s *Config) { d.LogFormat = strings.ToLower(s.LogFormat) },
		check: func(c *Config) error {
			if f := strings.ToLower(c.LogFormat); f != "text" && f != "json" {
				return fmt.Errorf("%q is not text or json", c.LogFormat)
			}
			return nil
		},
		value: func(c *Config) any { return c.LogFormat },
	},
	{
		key:   "buckets",
		help:  "padding buckets in bytes, ascending (flag and env: comma-separated); the same for every client",
		parse: parseBuckets,
		copy:  func(d, s *Config) { d.Buckets = slices.Clone(s.Buckets) },
		check: func(c *Config) error {
			p, err := padding.NewPolicy(c.Buckets...)
			if err != nil {
				return err
			}
			// The same bound server.New enforces, caught while the
			// operator can still see which setting caused it.
			if wire.MaxEnvelope(p) <= 0 {
				return fmt.Errorf("largest bucket %d leaves no room for an envelope (it must exceed %d bytes)",
					p.Max(), wire.MaxSendOverhead)
			}
			return nil
		},
		value: func(c *Config) any { return c.Buckets },
	},
	{
		key:   "quota_messages",
		help:  "most messages one mailbox may hold",
		parse: func(c *Config, s string) error { return parseInt(&c.QuotaMessages, s) },
		copy:  func(d, s *Config) { d.QuotaMessages = s.QuotaMessages },
		// ServerHello announces the quota as a u32.
		check: func(c *Config) error { return checkRange(int64(c.QuotaMessages), 1, math.MaxUint32) },
		value: func(c *Config) any { return c.QuotaMessages },
	},
	{
		key:   "quota_bytes",
		help:  "most envelope bytes one mailbox may hold",
		parse: func(c *Config, s string) error { return parseInt64(&c.QuotaBytes, s) },
		copy:  func(d, s *Config) { d.QuotaBytes = s.QuotaBytes },
		check: func(c *Config) error { return checkRange(c.QuotaBytes, 1, math.MaxInt64) },
		value: func(c *Config) any { return c.QuotaBytes },
	},
	{
		key:   "message_ttl",
		help:  "how long an unfetched message is kept",
		parse: func(c *Config, s string) error { return c.MessageTTL.UnmarshalText([]byte(s)) },
		copy:  func(d, s *Config) { d.MessageTTL = s.MessageTTL },
		// ServerHello announces the TTL in whole seconds as a u32.
		check: func(c *Config) error {
			return checkDuration(c.MessageTTL.Duration, time.Second, math.MaxUint32*time.Second)
		},
		value: func(c *Config) any { return c.MessageTTL },
	},
	{
		key:   "mailbox_ttl",
		help:  "how long a mailbox its owner does not fetch from is kept (counted in whole days)",
		parse: func(c *Config, s string) error { return c.MailboxTTL.UnmarshalText([]byte(s)) },
		copy:  func(d, s *Config) { d.MailboxTTL = s.MailboxTTL },
		// Use is recorded by the day: a shorter TTL could delete a
		// mailbox fetched from the same day.
		check: func(c *Config) error { return checkDuration(c.MailboxTTL.Duration, 24*time.Hour, 0) },
		value: func(c *Config) any { return c.MailboxTTL },
	},
	{
		key:   "purge_interval",
		help:  "how often expired messages and idle mailboxes are deleted",
		parse: func(c *Config, s string) error { return c.PurgeInterval.UnmarshalText([]byte(s)) },
		copy:  func(d, s *Config) { d.PurgeInterval = s.PurgeInterval },
		// A sweep more often than every second only burns write
		// transactions that the sends need.
		check: func(c *Config) error { return checkDuration(c.PurgeInterval.Duration, time.Second, 0) },
		value: func(c *Config) any { return c.PurgeInterval },
	},
	{
		key:   "max_streams",
		help:  "concurrent request streams per connection",
		parse: func(c *Config, s string) error { return parseInt(&c.MaxStreams, s) },
		copy:  func(d, s *Config) { d.MaxStreams = s.MaxStreams },
		// Far more than one client needs; above it a single connection
		// could tie up an unreasonable share of the request handlers.
		check: func(c *Config) error { return checkRange(int64(c.MaxStreams), 1, 65535) },
		value: func(c *Config) any { return c.MaxStreams },
	},
	{
		key:   "max_conns",
		help:  "concurrent connections, all transports together; more are refused with UNAVAILABLE. Each costs the server about 72 KiB before it opens a stream (10,000: about 700 MiB); lower it on small machines",
		parse: func(c *Config, s string) error { return parseInt(&c.MaxConns, s) },
		copy:  func(d, s *Config) { d.MaxConns = s.MaxConns },
		check: func(c *Config) error { return checkRange(int64(c.MaxConns), 1, 1_000_000) },
		value: func(c *Config) any { return c.MaxConns },
	},
	{
		key:   "max_conns_per_addr",
		help:  "concurrent clearnet connections per source address (IPv6: per /64); more are refused with RATE_LIMITED; not applied over Tor",
		parse: func(c *Config, s string) error { return parseInt(&c.MaxConnsPerAddr, s) },
		copy:  func(d, s *Config) { d.MaxConnsPerAddr = s.MaxConnsPerAddr },
		check: func(c *Config) error { return checkRange(int64(c.MaxConnsPerAddr), 1, 1_000_000) },
		value: func(c *Config) any { return c.MaxConnsPerAddr },
	},
	{
		key:   "max_conns_per_net",
		help:  "concurrent clearnet connections per IPv6 /48 (a site's block of 65,536 /64s); more are refused with RATE_LIMITED; not applied over Tor",
		parse: func(c *Config, s string) error { return parseInt(&c.MaxConnsPerNet, s) },
		copy:  func(d, s *Config) { d.MaxConnsPerNet = s.MaxConnsPerNet },
		check: func(c *Config) error { return checkRange(int64(c.MaxConnsPerNet), 1, 1_000_000) },
		value: func(c *Config) any { return c.MaxConnsPerNet },
	},
	{
		key:   "max_conns_tor",
		help:  "concurrent connections through the onion service, all together (they share the tunnel's address); 0 is half of max_conns; more are refused with UNAVAILABLE",
		parse: func(c *Config, s string) error { return parseInt(&c.MaxConnsTor, s) },
		copy:  func(d, s *Config) { d.MaxConnsTor = s.MaxConnsTor },
		check: func(c *Config) error { return checkRange(int64(c.MaxConnsTor), 0, 1_000_000) },
		value: func(c *Config) any { return c.MaxConnsTor },
	},
	{
		key:   "delivery_bytes",
		help:  "envelope bytes all Fetch and Subscribe streams together may hold loaded but not yet sent; a stream that finds no room within request_timeout is answered UNAVAILABLE",
		parse: func(c *Config, s string) error { return parseInt64(&c.DeliveryBytes, s) },
		copy:  func(d, s *Config) { d.DeliveryBytes = s.DeliveryBytes },
		check: func(c *Config) error { return checkRange(c.DeliveryBytes, c.DeliveryConnBytes, 1<<40) },
		value: func(c *Config) any { return c.DeliveryBytes },
	},
	{
		key:   "delivery_conn_bytes",
		help:  "envelope bytes the Fetch and Subscribe streams of one connection may hold loaded but not yet sent; at least twice the largest bucket, at most delivery_bytes",
		parse: func(c *Config, s string) error { return parseInt64(&c.DeliveryConnBytes, s) },
		copy:  func(d, s *Config) { d.DeliveryConnBytes = s.DeliveryConnBytes },
		// One envelope of the largest bucket and its record must fit.
		check: func(c *Config) error {
			return checkRange(c.DeliveryConnBytes, 2*int64(slices.Max(append([]int{padding.MinBucket}, c.Buckets...))), 1<<40)
		},
		value: func(c *Config) any { return c.DeliveryConnBytes },
	},
	{
		key:   "delivery_source_bytes",
		help:  "delivery_bytes one source (an address, IPv6 /64; its /48 gets max_conns_per_net / max_conns_per_addr times as much; over Tor a connection) may hold; when delivery_bytes is full a source holding less resets streams of the source holding the most; 0 is 8 MiB or delivery_bytes if less; else at least delivery_conn_bytes, at most delivery_bytes",
		parse: func(c *Config, s string) error { return parseInt64(&c.DeliverySrcBytes, s) },
		copy:  func(d, s *Config) { d.DeliverySrcBytes = s.DeliverySrcBytes },
		check: func(c *Config) error {
			if c.DeliverySrcBytes == 0 {
				return nil
			}
			return checkRange(c.DeliverySrcBytes, c.DeliveryConnBytes, c.DeliveryBytes)
		},
		value: func(c *Config) any { return c.DeliverySrcBytes },
	},
	{
		key:   "max_streams_per_addr",
		help:  "concurrent request streams of one source across all its connections (an address, IPv6 /64; its /48 gets max_conns_per_net / max_conns_per_addr times as many; over Tor a connection); more are reset with RATE_LIMITED before they are read; max_streams_total if that is less",
		parse: func(c *Config, s string) error { return parseInt(&c.MaxStreamsPerAddr, s) },
		copy:  func(d, s *Config) { d.MaxStreamsPerAddr = s.MaxStreamsPerAddr },
		check: func(c *Config) error { return checkRange(int64(c.MaxStreamsPerAddr), 1, 10_000_000) },
		value: func(c *Config) any { return c.MaxStreamsPerAddr },
	},
	{
		key:   "max_streams_total",
		help:  "concurrent request streams of all connections together (each costs about 20-30 KiB); when full, a source holding fewer resets a stream of the source holding the most, else the stream is refused with RATE_LIMITED",
		parse: func(c *Config, s string) error { return parseInt(&c.MaxStreamsTotal, s) },
		copy:  func(d, s *Config) { d.MaxStreamsTotal = s.MaxStreamsTotal },
		check: func(c *Config) error { return checkRange(int64(c.MaxStreamsTotal), 1, 10_000_000) },
		value: func(c *Config) any { return c.MaxStreamsTotal },
	},
	{
		key:   "request_bytes",
		help:  "bytes the record buffers of all request streams together may hold while their records arrive; a record that finds it full pushes out the records arriving longest (UNAVAILABLE), or is refused with UNAVAILABLE",
		parse: func(c *Config, s string) error { return parseInt64(&c.RequestBytes, s) },
		copy:  func(d, s *Config) { d.RequestBytes = s.RequestBytes },
		check: func(c *Config) error { return checkRange(c.RequestBytes, c.RequestConnBytes, 1<<40) },
		value: func(c *Config) any { return c.RequestBytes },
	},
	{
		key:   "request_conn_bytes",
		help:  "bytes the record buffers of one connection's request streams may hold while their records arrive; a record over it is refused with UNAVAILABLE; at least the largest bucket, at most request_bytes",
		parse: func(c *Config, s string) error { return parseInt64(&c.RequestConnBytes, s) },
		copy:  func(d, s *Config) { d.RequestConnBytes = s.RequestConnBytes },
		// A record of the largest bucket must fit.
		check: func(c *Config) error {
			return checkRange(c.RequestConnBytes, int64(slices.Max(append([]int{padding.MinBucket}, c.Buckets...))), 1<<40)
		},
		value: func(c *Config) any { return c.RequestConnBytes },
	}, {
		key:   "request_source_bytes",
		help:  "request_bytes one source (an address, IPv6 /64; its /48 gets max_conns_per_net / max_conns_per_addr times as much; over Tor a connection) may hold while its records arrive; a record over it is refused with UNAVAILABLE; 0 is 8 MiB or request_bytes if less; else at least request_conn_bytes, at most request_bytes",
		parse: func(c *Config, s string) error { return parseInt64(&c.RequestSrcBytes, s) },
		copy:  func(d, s *Config) { d.RequestSrcBytes = s.RequestSrcBytes },
		check: func(c *Config) error {
			if c.RequestSrcBytes == 0 {
				return nil
			}
			return checkRange(c.RequestSrcBytes, c.RequestConnBytes, c.RequestBytes)
		},
		value: func(c *Config) any { return c.RequestSrcBytes },
	},

	{
		key:   "request_rate",
		help:  "requests per second one connection may sustain; above it a request is refused with RATE_LIMITED",
		parse: func(c *Config, s string) error { return parseFloat(&c.RequestRate, s) },
		copy:  func(d, s *Config) { d.RequestRate = s.RequestRate },
		check: func(c *Config) error {
			if !(c.RequestRate >= 0.01 && c.RequestRate <= 1e6) {
				return fmt.Errorf("%v is outside 0.01..1000000", c.RequestRate)
			}
			return nil
		},
		value: func(c *Config) any { return c.RequestRate },
	},
	{
		key:   "request_burst",
		help:  "requests one connection may make at once before request_rate applies",
		parse: func(c *Config, s string) error { return parseInt(&c.RequestBurst, s) },
		copy:  func(d, s *Config) { d.RequestBurst = s.RequestBurst },
		check: func(c *Config) error { return checkRange(int64(c.RequestBurst), 1, 1_000_000) },
		value: func(c *Config) any { return c.RequestBurst },
	},
	{
		key:   "admin_listen",
		help:  "TCP address of /healthz, /readyz and /metrics, or off; keep it off the public interfaces",
		parse: func(c *Config, s string) error { c.AdminListen = s; return nil },
		copy:  func(d, s *Config) { d.AdminListen = s.AdminListen },
		check: func(c *Config) error {
			if c.AdminListen == AdminOff {
				return nil
			}
			return checkListen(c.AdminListen)
		},
		value: func(c *Config) any { return c.AdminListen },
	},
	{
		key:   "kt",
		help:  "keep the key-transparency directory of account credentials",
		parse: func(c *Config, s string) error { return parseBool(&c.KT, s) },
		copy:  func(d, s *Config) { d.KT = s.KT },
		check: func(c *Config) error { return nil },
		value: func(c *Config) any { return c.KT },
	},
	{
		key:   "kt_listen",
		help:  "TCP address of the public read-only key-transparency log (C2SP tlog-tiles and each epoch's update list for auditors, over HTTP), or off",
		parse: func(c *Config, s string) error { c.KTListen = s; return nil },
		copy:  func(d, s *Config) { d.KTListen = s.KTListen },
		check: func(c *Config) error {
			if c.KTListen == AdminOff {
				return nil
			}
			if c.OnionOnly {
				if err := CheckLoopback(c.KTListen); err != nil {
					return fmt.Errorf("%w; an onion-only server listens on loopback only", err)
				}
			}
			_, _, err := net.SplitHostPort(c.KTListen)
			return err
		},
		value: func(c *Config) any { return c.KTListen },
	},
	{
		key:   "kt_prefix",
		help:  "URL path prefix of the key-transparency log: <prefix>/checkpoint, <prefix>/tile/...",
		parse: func(c *Config, s string) error { c.KTPrefix = s; return nil },
		copy:  func(d, s *Config) { d.KTPrefix = s.KTPrefix },
		check: func(c *Config) error {
			if !strings.HasPrefix(c.KTPrefix, "/") || strings.HasSuffix(c.KTPrefix, "/") {
				return fmt.Errorf("%q must start and not end with /", c.KTPrefix)
			}
			return nil
		},
		value: func(c *Config) any { return c.KTPrefix },
	},
	{
		key:   "kt_epoch",
		help:  "key-transparency epoch cadence; clients pin it (it is part of the directory configuration)",
		parse: func(c *Config, s string) error { return c.KTEpoch.UnmarshalText([]byte(s)) },
		copy:  func(d, s *Config) { d.KTEpoch = s.KTEpoch },
		check: func(c *Config) error { return checkDuration(c.KTEpoch.Duration, 200*time.Millisecond, time.Hour) },
		value: func(c *Config) any { return c.KTEpoch },
	},
	{
		key:   "kt_min_updates",
		help:  "leaves per key-transparency epoch: real updates are padded with fake ones up to it, hiding the update rate",
		parse: func(c *Config, s string) error { return parseInt(&c.KTMinUpdates, s) },
		copy:  func(d, s *Config) { d.KTMinUpdates = s.KTMinUpdates },
		check: func(c *Config) error { return checkRange(int64(c.KTMinUpdates), 1, 10000) },
		value: func(c *Config) any { return c.KTMinUpdates },
	},
	{
		key:   "handshake_timeout",
		help:  "QUIC handshake plus version hello (raise it for Tor)",
		parse: func(c *Config, s string) error { return c.HandshakeTimeout.UnmarshalText([]byte(s)) },
		copy:  func(d, s *Config) { d.HandshakeTimeout = s.HandshakeTimeout },
		check: func(c *Config) error { return checkDuration(c.HandshakeTimeout.Duration, time.Millisecond, 0) },
		value: func(c *Config) any { return c.HandshakeTimeout },
	},
	{
		key:   "idle_timeout",
		help:  "QUIC idle timeout of a connection",
		parse: func(c *Config, s string) error { return c.IdleTimeout.UnmarshalText([]byte(s)) },
		copy:  func(d, s *Config) { d.IdleTimeout = s.IdleTimeout },
		check: func(c *Config) error { return checkDuration(c.IdleTimeout.Duration, time.Millisecond, 0) },
		value: func(c *Config) any { return c.IdleTimeout },
	},
	{
		key:   "request_timeout",
		help:  "reading one request or writing one response",
		parse: func(c *Config, s string) error { return c.RequestTimeout.UnmarshalText([]byte(s)) },
		copy:  func(d, s *Config) { d.RequestTimeout = s.RequestTimeout },
		check: func(c *Config) error { return checkDuration(c.RequestTimeout.Duration, time.Millisecond, 0) },
		value: func(c *Config) any { return c.RequestTimeout },
	},
	{
		key:   "shutdown_timeout",
		help:  "how long a shutdown waits for requests in flight",
		parse: func(c *Config, s string) error { return c.ShutdownTimeout.UnmarshalText([]byte(s)) },
		copy:  func(d, s *Config) { d.ShutdownTimeout = s.ShutdownTimeout },
		check: func(c *Config) error { return checkDuration(c.ShutdownTimeout.Duration, time.Millisecond, 0) },
		value: func(c *Config) any { return c.ShutdownTimeout },
	},
	{
		key:   "store_max_batch",
		help:  "most writes committed in one store transaction (group commit)",
		parse: func(c *Config, s string) error { return parseInt(&c.StoreMaxBatch, s) },
		copy:  func(d, s *Config) { d.StoreMaxBatch = s.StoreMaxBatch },
		// The store queues four batches in memory.
		check: func(c *Config) error { return checkRange(int64(c.StoreMaxBatch), 1, 65536) },
		value: func(c *Config) any { return c.StoreMaxBatch },
	},
	{
		key: "store",
		help: "where mailboxes, messages and spent tokens live: bbolt, the embedded file qpc.db in the data directory (no setup), " +
			"or a postgres:// URL of a PostgreSQL database several nodes may share (docs/scaling.md; accounts and key transparency stay in the data directory). " +
			"Give the password in PGPASSWORD or ~/.pgpass, not in the URL",
		parse: func(c *Config, s string) error { c.Store = s; return nil },
		copy:  func(d, s *Config) { d.Store = s.Store },
		check: func(c *Config) error { return checkStore(c.Store) },
		value: func(c *Config) any { return redactStore(c.Store) },
	},
	{
		key:   "require_tokens",
		help:  "every mailbox creation and send must spend an anonymous delivery token; false is for tests and benchmarks only",
		parse: func(c *Config, s string) error { return parseBool(&c.RequireTokens, s) },
		copy:  func(d, s *Config) { d.RequireTokens = s.RequireTokens },
		check: func(c *Config) error { return nil },
		value: func(c *Config) any { return c.RequireTokens },
	},
	{
		key:   "token_epoch",
		help:  "lifetime of a token key; tokens of the current and previous epoch are accepted",
		parse: func(c *Config, s string) error { return c.TokenEpoch.UnmarshalText([]byte(s)) },
		copy:  func(d, s *Config) { d.TokenEpoch = s.TokenEpoch },
		// Whole seconds: TokenKeyList announces the epoch in seconds.
		check: func(c *Config) error {
			if c.TokenEpoch.Duration < time.Minute || c.TokenEpoch.Duration%time.Second != 0 {
				return fmt.Errorf("%v must be whole seconds, at least 1m", c.TokenEpoch.Duration)
			}
			return nil
		},
		value: func(c *Config) any { return c.TokenEpoch },
	},
	{
		key:   "token_quota",
		help:  "tokens one account may obtain per token epoch",
		parse: func(c *Config, s string) error { return parseInt(&c.TokenQuota, s) },
		copy:  func(d, s *Config) { d.TokenQuota = s.TokenQuota },
		check: func(c *Config) error { return checkRange(int64(c.TokenQuota), 1, 1<<20) },
		value: func(c *Config) any { return c.TokenQuota },
	},
	{
		key:   "key_package_pool",
		help:  "one-time KeyPackages an account may keep on the server for first contacts; when they run out, contacts use the last-resort KeyPackage in key transparency",
		parse: func(c *Config, s string) error { return parseInt(&c.KeyPackagePool, s) },
		copy:  func(d, s *Config) { d.KeyPackagePool = s.KeyPackagePool },
		// KeyPackagesStored announces the limit as a u16.
		check: func(c *Config) error { return checkRange(int64(c.KeyPackagePool), 1, math.MaxUint16) },
		value: func(c *Config) any { return c.KeyPackagePool },
	},
	{
		key: "observer_record",
		help: "RESEARCH ONLY, never in production: a new file (it must not exist) to which the server writes every connection, request, delivery, ack and subscription " +
			"it sees, for the traffic-analysis lab (docs/research.md); or off. The log warns every minute while it is on",
		parse: func(c *Config, s string) error { c.ObserverRecord = s; return nil },
		copy:  func(d, s *Config) { d.ObserverRecord = s.ObserverRecord },
		check: func(c *Config) error {
			if c.ObserverRecord == "" {
				return fmt.Errorf("must be a file or %q", ObserverOff)
			}
			return nil
		},
		value: func(c *Config) any { return c.ObserverRecord },
	},
}, slices.Concat(torConfigFields, accountConfigFields, ktConfigFields)...)

func parseBool(dst *bool, s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("%q is not true or false", s)
	}
	*dst = v
	return nil
}

var logLevels = map[string]slog.Level{
	"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError,
}

func fieldByKey(key string) *configField {
	for i := range configFields {
		if configFields[i].key == key {
			return &configFields[i]
		}
	}
	return nil
}

// Keys lists the TOML keys in the order they are rendered.
func Keys() []string {
	keys := make([]string, len(configFields))
	for i, f := range configFields {
		keys[i] = f.key
	}
	return keys
}

func checkListen(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", s, err)
	}
	if host == "" {
		// An empty host would listen everywhere but leave nothing to put
		// in the qpc:// address; make the operator say it.
		return fmt.Errorf("%q has no host (use 0.0.0.0:%s or [::]:%s to listen on every interface)", s, port, port)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%q has no valid port (want 0 to 65535)", s)
	}
	return nil
}

func parseInt(dst *int, s string) error {
	v, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("%q is not an integer", s)
	}
	*dst = v
	return nil
}

func parseFloat(dst *float64, s string) error {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return fmt.Errorf("%q is not a number", s)
	}
	*dst = v
	return nil
}

func parseInt64(dst *int64, s string) error {
	v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return fmt.Errorf("%q is not an integer", s)
	}
	*dst = v
	return nil
}

func parseBuckets(c *Config, s string) error {
	var sizes []int
	for part := range strings.SplitSeq(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil {
			return fmt.Errorf("%q is not a comma-separated list of byte sizes", s)
		}
		sizes = append(sizes, v)
	}
	c.Buckets = sizes
	return nil
}

func checkRange(v, lo, hi int64) error {
	if v < lo || v > hi {
		return fmt.Errorf("%d is outside %d..%d", v, lo, hi)
	}
	return nil
}

// checkDuration requires lo <= d, and d <= hi unless hi is 0.
func checkDuration(d, lo, hi time.Duration) error {
	if d < lo {
		return fmt.Errorf("%s is shorter than %s", Duration{d}, Duration{lo})
	}
	if hi > 0 && d > hi {
		return fmt.Errorf("%s is longer than %s", Duration{d}, Duration{hi})
	}
	return nil
}

// Flags holds the configuration flags given on a command line, keyed
// by TOML key. Only flags actually given appear, so that an unset flag
// does not hide the environment or the file.
type Flags map[string]string

// Register defines one flag per configuration field on fs (--listen,
// --data-dir, --message-ttl, ...). Values are checked by Load, which
// knows what every other layer said.
func (f Flags) Register(fs *flag.FlagSet) {
	def := Default()
	for _, fd := range configFields {
		usage := fmt.Sprintf("%s (default %s; env %s)", fd.help, renderValue(fd.value(&def)), EnvName(fd.key))
		set := func(s string) error {
			f[fd.key] = s
			return nil
		}
		// A boolean flag may stand alone (--onion-only) or take a
		// value (--require-tokens=false).
		if _, ok := fd.value(&def).(bool); ok {
			fs.BoolFunc(FlagName(fd.key), usage, set)
			continue
		}
		fs.Func(FlagName(fd.key), usage, set)
	}
}

// Load builds the effective configuration: defaults, then the file
// <data dir>/qpc-server.toml if it exists, then the environment (QPC_* as
// returned by lookupEnv; an empty value counts as unset), then flags. The
// data directory itself comes from the flag, the environment or the
// default, never from the file inside it. Every value given is checked,
// even one a higher layer overrides, so that a broken file does not wait
// for the day its override is removed; errors name the key and its source.
func Load(flags Flags, lookupEnv func(string) (string, bool)) (*Config, error) {
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	for key := range flags {
		if fieldByKey(key) == nil {
			return nil, fmt.Errorf("config: unknown flag key %q", key)
		}
	}
	c := Default()
	env := func(key string) (string, bool) {
		v, ok := lookupEnv(EnvName(key))
		return v, ok && v != ""
	}
	set := func(key, text string, src Source) error {
		f := fieldByKey(key)
		if err := f.parse(&c, text); err != nil {
			return fmt.Errorf("config: %s from %s: %w", key, src, err)
		}
		if err := f.check(&c); err != nil {
			return fmt.Errorf("config: %s from %s: %w", key, src, err)
		}
		c.sources[key] = src
		return nil
	}

	// The data directory first: it says where the file is.
	if v, ok := env("data_dir"); ok {
		if err := set("data_dir", v, Source{FromEnv, EnvName("data_dir")}); err != nil {
			return nil, err
		}
	}
	if v, ok := flags["data_dir"]; ok {
		if err := set("data_dir", v, Source{FromFlag, "--" + FlagName("data_dir")}); err != nil {
			return nil, err
		}
	}
	if err := c.loadFile(c.FilePath()); err != nil {
		return nil, err
	}
	for _, f := range configFields {
		if f.key == "data_dir" {
			continue
		}
		if v, ok := env(f.key); ok {
			if err := set(f.key, v, Source{FromEnv, EnvName(f.key)}); err != nil {
				return nil, err
			}
		}
	}
	for _, f := range configFields {
		if v, ok := flags[f.key]; ok && f.key != "data_dir" {
			if err := set(f.key, v, Source{FromFlag, "--" + FlagName(f.key)}); err != nil {
				return nil, err
			}
		}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// loadFile applies the TOML file at path, if there is one. Decoding is
// strict: a key this version does not know is an error, because a
// misspelt key silently falling back to its default is how a server ends
// up with a quota or TTL nobody chose.
func (c *Config) loadFile(path string) error {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	src := Source{FromFile, path}
	var fc Config
	md, err := toml.Decode(string(raw), &fc)
	if err != nil {
		return fmt.Errorf("config: %s: %w", src, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		names := make([]string, len(und))
		for i, k := range und {
			names[i] = strconv.Quote(k.String())
		}
		return fmt.Errorf("config: %s: unknown key %s (known keys: %s)",
			src, strings.Join(names, ", "), strings.Join(Keys(), ", "))
	}
	if md.IsDefined("data_dir") {
		return fmt.Errorf("config: data_dir from %s: the file lives in the data directory, so it cannot move it; use --data-dir or %s",
			src, EnvName("data_dir"))
	}
	for _, f := range configFields {
		if !md.IsDefined(f.key) {
			continue
		}
		if err := f.check(&fc); err != nil {
			return fmt.Errorf("config: %s from %s: %w", f.key, src, err)
		}
		f.copy(c, &fc)
		c.sources[f.key] = src
	}
	return nil
}

// Validate checks every field, naming the field and its source in the
// error. Load calls it; call it yourself after changing a Config.
func (c *Config) Validate() error {
	for _, f := range configFields {
		if err := f.check(c); err != nil {
			return fmt.Errorf("config: %s from %s: %w", f.key, c.Source(f.key), err)
		}
	}
	return nil
}

// StoreBolt is the store setting of the embedded store, the default.
const StoreBolt = "bbolt"

// StorePostgres reports whether the store setting names PostgreSQL.
func (c *Config) StorePostgres() bool { return isPostgresURL(c.Store) }

func isPostgresURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// checkStore accepts bbolt or a postgres:// URL; the connection itself is
// checked when the server opens the store.
func checkStore(s string) error {
	if s == StoreBolt {
		return nil
	}
	if !isPostgresURL(s) {
		return fmt.Errorf("%q is neither %s nor a postgres:// URL", redactStore(s), StoreBolt)
	}
	if _, err := url.Parse(s); err != nil {
		return fmt.Errorf("%q is not a valid URL", redactStore(s))
	}
	return nil
}

// redactStore hides a password given in the store URL, so that neither
// the rendered configuration nor an error prints it: the userinfo's
// password, and a password query parameter (libpq accepts both). A URL
// that does not parse keeps only what follows its credentials, and no
// query at all.
func redactStore(s string) string {
	const mask = "xxxxx" // what url.Redacted puts for a password
	u, err := url.Parse(s)
	if err != nil {
		if i := strings.LastIndex(s, "@"); i >= 0 {
			s = mask + s[i:]
		}
		if i := strings.Index(s, "?"); i >= 0 {
			s = s[:i+1] + mask
		}
		return s
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", mask)
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// FilePath is the configuration file in the data directory.
func (c *Config) FilePath() string { return filepath.Join(c.DataDir, FileName) }

// StorePath is the bbolt file in the data directory.
func (c *Config) StorePath() string { return filepath.Join(c.DataDir, StoreFile) }

// Level is the slog level of log_level.
func (c *Config) Level() slog.Level { return logLevels[strings.ToLower(c.LogLevel)] }

// NewLogger returns a logger writing to w in log_format at log_level.
func (c *Config) NewLogger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.Level()}
	if strings.EqualFold(c.LogFormat, "json") {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// renderValue formats one value as TOML (a quoted string, an integer, an
// array) with the TOML encoder, so quoting is always right.
func renderValue(v any) string {
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(map[string]any{"k": v}); err != nil {
		// Every field is a string, integer, []int or Duration, all of
		// which encode; reaching this is a programming error.
		panic(fmt.Sprintf("config: render %T: %v", v, err))
	}
	return strings.TrimSpace(strings.TrimPrefix(b.String(), "k = "))
}

// Render writes the effective configuration as TOML, each line annotated
// with its source (# from flag, # from env QPC_X, # from file, # default).
// data_dir is written as a comment: it cannot be set in the file, and the
// output should remain a valid file.
func (c *Config) Render(w io.Writer) error {
	var b bytes.Buffer
	b.WriteString("# Effective qpc-server configuration.\n")
	b.WriteString("# Precedence: flags > QPC_* environment > " + c.FilePath() + " > defaults.\n")
	for _, f := range configFields {
		line := f.key + " = " + renderValue(f.value(c))
		if f.key == "data_dir" {
			line = "# " + line
		}
		fmt.Fprintf(&b, "%-40s %s\n", line, c.Source(f.key).annotation())
	}
	_, err := w.Write(b.Bytes())
	return err
}

// DefaultFile is the commented file `qpc-server init` writes: every
// setting with its default, commented out, so that a default changed in a
// later release reaches servers whose operator never chose otherwise.
func DefaultFile() []byte {
	def := Default()
	var b bytes.Buffer
	b.WriteString(`# qpc-server configuration.
#
# Precedence: command-line flags > QPC_* environment variables > this file >
# built-in defaults. Every key has a flag (--key-name) and a variable
# (QPC_KEY_NAME). Uncomment a line to change it; an unknown key is an error.
# The data directory is chosen by --data-dir or QPC_DATA_DIR, not here.
# Durations are written like "504h", "10m", "30s".
`)
	for _, f := range configFields {
		if f.key == "data_dir" {
			continue
		}
		fmt.Fprintf(&b, "\n# %s.\n# Env %s, flag --%s.\n#%s = %s\n", f.help, EnvName(f.key), FlagName(f.key), f.key, renderValue(f.value(&def)))
	}
	return b.Bytes()
}
