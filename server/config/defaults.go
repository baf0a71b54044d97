package config

import "time"

// The defaults of the server's settings, written once: Default() builds
// the configuration from them, and server.Options takes them for the
// fields a caller leaves zero. docs/operations.md explains how to size
// the limits.

// Mailboxes and messages.
const (
	DefaultMessageTTL    = 21 * 24 * time.Hour // message_ttl
	DefaultMailboxTTL    = 90 * 24 * time.Hour // mailbox_ttl
	DefaultPurgeInterval = 10 * time.Minute    // purge_interval
	DefaultQuotaMessages = 10_000              // quota_messages
	DefaultQuotaBytes    = 256 << 20           // quota_bytes
	DefaultTokenQuota    = 1000                // token_quota
	// DefaultKeyPackagePool lasts a hundred first contacts between two
	// uploads: a client tops its pool up whenever it is online.
	DefaultKeyPackagePool = 100
)

// Connections and requests.
const (
	DefaultMaxStreams       = 100              // max_streams: request streams per connection
	DefaultHandshakeTimeout = 10 * time.Second // handshake_timeout (raise for Tor)
	DefaultIdleTimeout      = 60 * time.Second // idle_timeout
	DefaultRequestTimeout   = 30 * time.Second // request_timeout
	DefaultShutdownTimeout  = 10 * time.Second // shutdown_timeout

	DefaultMaxConns        = 10_000
	DefaultMaxConnsPerAddr = 64
	// DefaultMaxConnsPerNet is the cap per IPv6 /48, the block a site is
	// usually given: 65,536 /64s, each of which would otherwise get
	// MaxConnsPerAddr connections of its own.
	DefaultMaxConnsPerNet = 256
	DefaultRequestRate    = 200
	DefaultRequestBurst   = 400
)

// Delivery memory: envelope bytes that Fetch and Subscribe streams hold
// loaded but not yet written (server/delivery.go).
const (
	// DefaultDeliveryBytes bounds the envelope bytes that all Fetch and
	// Subscribe streams together hold loaded but not yet written.
	DefaultDeliveryBytes = 32 << 20
	// DefaultDeliveryConnBytes bounds them per connection: three pages
	// of the largest envelopes of the default policy.
	DefaultDeliveryConnBytes = 2 << 20
	// DefaultDeliverySourceBytes is one source's share of delivery_bytes:
	// eight connections' worth of delivery_conn_bytes.
	DefaultDeliverySourceBytes = 8 << 20
)

// Request memory: bytes the record buffers of request streams hold while
// their records arrive (server/requests.go).
const (
	// DefaultRequestBytes bounds the request-body bytes all streams
	// together hold: 256 records of the largest default bucket.
	DefaultRequestBytes = 32 << 20
	// DefaultRequestConnBytes bounds them per connection: 16 records of
	// the largest default bucket.
	DefaultRequestConnBytes = 2 << 20
	// DefaultRequestSourceBytes bounds them per source (an address, an
	// IPv6 /64; its /48 a multiple, as for delivery_source_bytes): a
	// quarter of RequestBytes, so that the records of one address never
	// fill the budget and an honest record does not have to push out a
	// stranger's (and wait for it to go) unless strangers on several
	// addresses fill it together.
	DefaultRequestSourceBytes = 8 << 20
)

// Streams per source and in total (server/sources.go).
const (
	// DefaultMaxStreamsPerAddr is about 8 streams for each of the
	// max_conns_per_addr connections one address may open: room for a
	// carrier-grade NAT's users, far below the 6,400 that 64 connections
	// × max_streams would allow.
	DefaultMaxStreamsPerAddr = 256
	// DefaultMaxStreamsTotal bounds the streams of all connections
	// together. An open stream costs the server about 20-30 KiB
	// (goroutine, reader, QUIC state; TestAttackServerRSS), so 2,048 of
	// them cost about 60 MiB at most.
	DefaultMaxStreamsTotal = 2048
)

// Key transparency (docs/key-transparency.md §7).
const (
	// DefaultKTListen is the public read-only tlog-tiles listener.
	DefaultKTListen = "127.0.0.1:4480"
	// DefaultKTPublishRate and DefaultKTPublishBurst: a client publishes
	// a few times a year (client/identity.go), so eight at once and four
	// an hour leave every honest retry room, while one account takes
	// ten days to reach kt.DefaultMaxVersions and adds at most 64 KiB
	// an hour to the directory.
	DefaultKTPublishRate  = 4.0 // per hour
	DefaultKTPublishBurst = 8
	// DefaultKTProofRate and DefaultKTProofBurst: the VRF proofs one
	// connection's lookups may make the server compute (a lookup of a
	// label nobody asked for costs up to 20; asked again, none: the
	// proofs are cached). Fifty such lookups at once, five a second.
	DefaultKTProofRate  = 100.0 // per second
	DefaultKTProofBurst = 1000
	// DefaultKTProofRateTotal and DefaultKTProofBurstTotal: the same for
	// all connections together, about a quarter of a core at 0.27 ms a
	// proof.
	DefaultKTProofRateTotal  = 1000.0 // per second
	DefaultKTProofBurstTotal = 5000
)

// The admin listener: loopback by default, so that metrics and health
// never face the public interfaces unless an operator says so.
const DefaultAdminListen = "127.0.0.1:9090"
