package server

import (
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/server/accounts"
	"github.com/quicprochat/qpc/server/config"
	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/tokens"
)

// OptionsFromConfig turns the configuration into server and store options.
// The caller adds Identity, Store and Logger to the first; Run adds the
// rest.
func OptionsFromConfig(c *config.Config) (Options, store.Options, error) {
	if err := c.Validate(); err != nil {
		return Options{}, store.Options{}, err
	}
	policy, err := padding.NewPolicy(c.Buckets...)
	if err != nil { // unreachable after Validate, but never ignore an error
		return Options{}, store.Options{}, fmt.Errorf("config: buckets: %w", err)
	}
	so := Options{
		Policy:              policy,
		Quota:               store.Quota{MaxMessages: c.QuotaMessages, MaxBytes: c.QuotaBytes},
		TTL:                 c.MessageTTL.Duration,
		MailboxTTL:          c.MailboxTTL.Duration,
		PurgeInterval:       c.PurgeInterval.Duration,
		MaxStreams:          c.MaxStreams,
		MaxConns:            c.MaxConns,
		MaxConnsPerAddr:     c.MaxConnsPerAddr,
		MaxConnsPerNet:      c.MaxConnsPerNet,
		MaxConnsTor:         c.MaxConnsTor,
		DeliveryBytes:       c.DeliveryBytes,
		DeliveryConnBytes:   c.DeliveryConnBytes,
		DeliverySourceBytes: c.DeliverySrcBytes,
		MaxStreamsPerAddr:   c.MaxStreamsPerAddr,
		MaxStreamsTotal:     c.MaxStreamsTotal,
		RequestBytes:        c.RequestBytes,
		RequestConnBytes:    c.RequestConnBytes,
		RequestSourceBytes:  c.RequestSrcBytes,
		RequestRate:         c.RequestRate,
		RequestBurst:        c.RequestBurst,
		HandshakeTimeout:    c.HandshakeTimeout.Duration,
		IdleTimeout:         c.IdleTimeout.Duration,
		RequestTimeout:      c.RequestTimeout.Duration,
		TokenEpoch:          c.TokenEpoch.Duration,
		TokenQuota:          c.TokenQuota,
		KeyPackagePool:      c.KeyPackagePool,
		KTLimits:            ktLimits(c),
	}
	if !c.RequireTokens {
		so.Authorizer = OpenAccess{}
	}
	sto := store.Options{
		MaxBatch: c.StoreMaxBatch,
		// The server enforces the exact Send limit before the store sees
		// an envelope; the store's limit is what the policy can still
		// deliver, so a store filled under a larger policy is refused at
		// open instead of stranding its envelopes.
		MaxEnvelope: MaxDeliverable(policy),
	}
	return so, sto, nil
}

// ktLimits are the server's KT budgets of the configuration.
func ktLimits(c *config.Config) KTLimits {
	k := c.KTSettings
	return KTLimits{
		KTPublishRate: k.KTPublishRate, KTPublishBurst: k.KTPublishBurst,
		KTProofRate: k.KTProofRate, KTProofBurst: k.KTProofBurst,
		KTProofRateTotal: k.KTProofRateTotal, KTProofBurstTotal: k.KTProofBurstTotal,
	}
}

// Options configure a Server. Zero values take the defaults below.
type Options struct {
	Identity *Identity   // required
	Store    store.Store // required; the caller closes it after Shutdown

	Policy        padding.Policy // default padding.Default
	Quota         store.Quota    // per mailbox; default 10,000 messages, 256 MiB
	TTL           time.Duration  // message lifetime; default 21 days
	MailboxTTL    time.Duration  // a mailbox its owner has not fetched from for this long is deleted; default 90 days
	PurgeInterval time.Duration  // expiry sweep; default 10 minutes

	MaxStreams       int           // concurrent request streams per connection; default 100
	MaxConns         int           // concurrent connections, all transports; default 10,000
	MaxConnsPerAddr  int           // concurrent clearnet connections per source address (IPv6: per /64); default 64
	MaxConnsPerNet   int           // concurrent clearnet connections per IPv6 /48; default 256
	MaxConnsTor      int           // concurrent connections through the onion service; default MaxConns/2
	RequestRate      float64       // requests per second per connection (token bucket); default 200
	RequestBurst     int           // requests a connection may make at once above the rate; default 400
	HandshakeTimeout time.Duration // QUIC + hello; default 10 s (raise for Tor)
	IdleTimeout      time.Duration // QUIC idle timeout; default 60 s
	RequestTimeout   time.Duration // read one request / write one response; default 30 s

	// Delivery memory (delivery.go): envelope bytes Fetch and Subscribe
	// hold loaded but not yet written, per connection and in total.
	DeliveryConnBytes int64 // default 2 MiB
	DeliveryBytes     int64 // default 32 MiB (DefaultDeliveryBytes)
	// Per source (sources.go): an address (IPv6: /64), its /48 a
	// multiple; over Tor each connection. The server-wide caps are
	// shared max-min fairly.
	DeliverySourceBytes int64 // delivery bytes one source may hold; default 8 MiB
	MaxStreamsPerAddr   int   // request streams one source may hold across its connections; default 256
	MaxStreamsTotal     int   // request streams of all connections together; default 2,048
	MaxSubsPerMailbox   int   // subscriptions one mailbox keeps; a newer one replaces the oldest; default 4
	MaxSubsPerConn      int   // subscriptions one connection may hold; default 32

	// Request memory (requests.go): bytes the record buffers of request
	// streams hold while their records arrive, per connection and in total.
	RequestConnBytes int64 // default 2 MiB
	RequestBytes     int64 // default 32 MiB
	// RequestSourceBytes is one source's share of RequestBytes (sources.go
	// says what a source is); default 8 MiB.
	RequestSourceBytes int64

	// Tokens issues and redeems anonymous delivery tokens. With it (and
	// no Authorizer), every create and send must carry one token.
	Tokens     *tokens.Issuer
	TokenEpoch time.Duration // the issuer's epoch length; default tokens.DefaultEpochLength
	TokenQuota int           // tokens per account per epoch; default 1000
	// Accounts serves registration, login, sessions and token issuance,
	// and keeps the accounts' KeyPackage pools.
	Accounts *accounts.Service
	// KeyPackagePool is how many one-time KeyPackages one account's pool
	// may hold; default 100, at most 65,535 (KeyPackagesStored.Limit).
	KeyPackagePool int
	// KT is the key-transparency directory; nil: KT requests are refused
	// as unavailable. The caller starts and closes it.
	KT *kt.Directory
	// KTLimits bound what publishes and lookups may cost (kt_handler.go).
	KTLimits

	// Authorizer decides creates and sends. Default: a TokenAuthorizer
	// when Tokens is set, else OpenAccess (tests and benchmarks only,
	// with a warning in the log).
	Authorizer Authorizer
	// Versions are the protocol versions accepted, newest first: at most
	// N and N-1 (docs/compatibility.md). Default wire.SupportedVersions().
	Versions []uint16
	// Metrics receives the counters and histograms; nil records nothing.
	Metrics *metrics.Metrics
	Logger  *slog.Logger // default: slog.Default()
	Now     func() time.Time

	// Tap, if set, is handed every stream of every connection, the
	// version handshake's first, and the server uses the stream it
	// returns. It exists for harnesses that play a dishonest operator
	// (internal/hostile) or record what the server sees; the binaries
	// never set it. See tap.go.
	Tap StreamTap

	// Observer, if set, receives the observer record of the
	// traffic-analysis lab (observer.go, config key observer_record):
	// research only; the server warns in its log while it is set.
	Observer *Observer
}

// orDefault sets an option left unset (zero or negative) to its default d.
func orDefault[T ~int | ~int64 | ~float64](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}

func (o *Options) setDefaults() {
	if o.Policy.Max() == 0 {
		o.Policy = padding.Default
	}
	if o.Quota == (store.Quota{}) {
		o.Quota = store.Quota{MaxMessages: config.DefaultQuotaMessages, MaxBytes: config.DefaultQuotaBytes}
	}
	orDefault(&o.TTL, config.DefaultMessageTTL)
	orDefault(&o.MailboxTTL, config.DefaultMailboxTTL)
	orDefault(&o.PurgeInterval, config.DefaultPurgeInterval)
	orDefault(&o.HandshakeTimeout, config.DefaultHandshakeTimeout)
	orDefault(&o.IdleTimeout, config.DefaultIdleTimeout)
	orDefault(&o.RequestTimeout, config.DefaultRequestTimeout)
	orDefault(&o.MaxStreams, config.DefaultMaxStreams)
	o.setLimitDefaults()
	o.setDeliveryDefaults()
	o.setSourceDefaults()
	o.setRequestDefaults()
	o.KTLimits.setDefaults()
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	orDefault(&o.TokenEpoch, tokens.DefaultEpochLength)
	orDefault(&o.TokenQuota, config.DefaultTokenQuota)
	orDefault(&o.KeyPackagePool, config.DefaultKeyPackagePool)
	o.KeyPackagePool = min(o.KeyPackagePool, math.MaxUint16)
	if o.Authorizer == nil {
		if o.Tokens != nil {
			o.Authorizer = NewTokenAuthorizer(o.Tokens, o.TokenEpoch)
		} else {
			o.Authorizer = OpenAccess{}
		}
	}
	if _, open := o.Authorizer.(OpenAccess); open {
		o.Logger.Warn("delivery tokens are NOT required: anyone can create mailboxes and send; use this only for tests and benchmarks")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}
