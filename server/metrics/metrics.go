package metrics

import (
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/quicprochat/qpc/wire"
)

// Label values that are not kinds or codes. They are fixed sets: a label
// value that came from a client's input would be unbounded, and could be
// an identifier.
const (
	// Limits (qpc_limit_refusals_total{limit}).
	LimitConnections        = "connections"          // the global connection cap
	LimitConnectionsPerAddr = "connections_per_addr" // the per-source-address cap (clearnet only)
	LimitRequestRate        = "request_rate"         // the per-connection request rate
	LimitDraining           = "draining"             // refused because the server is shutting down
	LimitRequestTimeout     = "request_timeout"      // a stream that did not deliver its request in time, cut off
	LimitConnectionsPerNet  = "connections_per_net"  // the per-IPv6-/48 cap (clearnet only)
	LimitConnectionsTor     = "connections_tor"      // the cap on connections through the onion service
	LimitDeliveryBytes      = "delivery_bytes"       // a Fetch or Subscribe page found no room in the delivery budgets in time
	LimitSubscriptions      = "subscriptions"        // a subscription refused (per connection) or replaced (per mailbox)
	LimitKTPublish          = "kt_publish"           // an account's key-transparency publish rate
	LimitKTQueue            = "kt_queue"             // the key-transparency publish queue was full
	LimitKTProofs           = "kt_proofs"            // a lookup's VRF proofs over the connection's or the server's budget
	LimitStreamsPerAddr     = "streams_per_addr"     // a source's (address, IPv6 /64 or /48) cap on request streams
	LimitStreams            = "streams"              // the server's cap on request streams: refused, or another source's stream reset for it
	LimitRequestBytes       = "request_bytes"        // a request record refused, or pushed out while it arrived, by the request-body budgets

	// Transports (qpc_connections_*{transport}).
	TransportUDP = "udp" // QUIC on a UDP socket: clearnet
	TransportTor = "tor" // QUIC tunneled through the onion service

	// Login and registration outcomes.
	OutcomeSuccess     = "success"
	OutcomeFailure     = "failure"      // wrong password, unknown user, taken name
	OutcomeRateLimited = "rate_limited" // the account service's attempt limit
	OutcomeAbandoned   = "abandoned"    // the client never sent its last message; with OPAQUE the usual sign of a wrong password, which only the client can detect
	OutcomeError       = "error"        // storage or protocol error

	// KeyPackage fetch results (qpc_key_package_fetches_total{result}).
	// Empty is an empty pool or an unknown handle: the server answers
	// both alike, and so does this label.
	FetchServed = "served"
	FetchEmpty  = "empty"
)

// Metrics holds every collector of one server. The zero value is not
// usable; call New. A nil *Metrics is valid for every method and records
// nothing, so code paths need no checks.
type Metrics struct {
	reg *prometheus.Registry

	requests        *prometheus.CounterVec   // kind
	requestErrors   *prometheus.CounterVec   // kind, code
	requestDuration *prometheus.HistogramVec // kind
	limitRefusals   *prometheus.CounterVec   // limit

	connsAccepted *prometheus.CounterVec // transport
	connsOpen     *prometheus.GaugeVec   // transport
	hellos        *prometheus.CounterVec // version
	streamsOpen   prometheus.Gauge
	requestBytes  prometheus.Gauge
	deliveryBytes prometheus.Gauge

	commitDuration prometheus.Histogram
	commitOps      prometheus.Histogram
	commitFailures prometheus.Counter
	wakes          prometheus.Counter // wake-ups from the shared store
	wakeListener   prometheus.Gauge

	tokensIssued   prometheus.Counter
	tokensRedeemed prometheus.Counter
	tokensRejected *prometheus.CounterVec // reason (an error code)
	logins         *prometheus.CounterVec // outcome
	registrations  *prometheus.CounterVec // outcome

	keyPackagesUploaded prometheus.Counter
	keyPackageFetches   *prometheus.CounterVec // result

	ktEpochLag prometheus.Gauge
	ktWitness  ktWitnessSeries
	torEnabled prometheus.Gauge
	torUp      prometheus.Gauge
	ready      prometheus.Gauge
	draining   prometheus.Gauge

	totalsOnce sync.Once
	totals     *totalsCollector
}

// Histogram buckets. Requests span a cached read (~100 µs) to a send that
// waits for an fsync under load (tens of ms) to a slow disk (seconds).
var (
	latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	batchBuckets   = []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}
)

// New registers every collector, plus the Go runtime and process
// collectors, on a fresh registry. version is the build version for
// qpc_build_info.
func New(version string) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Every collector is registered as it is made.
	a := promauto.With(m.reg)
	counter := func(name, help string) prometheus.Counter {
		return a.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	counterVec := func(name, help string, labels ...string) *prometheus.CounterVec {
		return a.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	gauge := func(name, help string) prometheus.Gauge {
		return a.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	gaugeVec := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return a.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	}
	histogram := func(name, help string, buckets []float64) prometheus.Histogram {
		return a.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
	}

	gaugeVec("qpc_build_info", "Always 1; labels carry the server version and the Go version.",
		"version", "goversion").WithLabelValues(version, runtime.Version()).Set(1)

	m.requests = counterVec("qpc_requests_total", "Requests read, by kind (subscriptions and account exchanges count once).", "kind")
	m.requestErrors = counterVec("qpc_request_errors_total", "Error records sent, by request kind and protocol error code.", "kind", "code")
	m.requestDuration = a.NewHistogramVec(prometheus.HistogramOpts{
		Name: "qpc_request_duration_seconds", Help: "Time from a request read to its response written, by kind (subscriptions excluded).",
		Buckets: latencyBuckets,
	}, []string{"kind"})
	m.limitRefusals = counterVec("qpc_limit_refusals_total", "Connections and requests refused by a limit, by limit.", "limit")

	m.connsAccepted = counterVec("qpc_connections_accepted_total", "QUIC connections accepted, by transport.", "transport")
	m.connsOpen = gaugeVec("qpc_connections_open", "Connections open now, by transport.", "transport")
	m.hellos = counterVec("qpc_hello_versions_total", "Completed hellos by negotiated protocol version (watch it before retiring a version).", "version")
	m.streamsOpen = gauge("qpc_streams_open", "Request streams being handled now, all connections together.")
	m.requestBytes = gauge("qpc_request_bytes_held", "Bytes the record buffers of request streams hold now, all connections together (bounded by request_bytes).")
	m.deliveryBytes = gauge("qpc_delivery_bytes_held", "Envelope bytes Fetch and Subscribe pages hold now, all connections together (bounded by delivery_bytes).")

	m.commitDuration = histogram("qpc_store_commit_duration_seconds", "Duration of one group-commit write transaction, fsync included.", latencyBuckets)
	m.commitOps = histogram("qpc_store_commit_batch_ops", "Operations committed together in one write transaction.", batchBuckets)
	m.commitFailures = counter("qpc_store_commit_failures_total", "Write transactions rolled back by a storage failure.")
	m.wakes = counter("qpc_store_wakes_total", "Wake-ups received from the shared store: mailboxes another node stored in or deleted.")
	m.wakeListener = gauge("qpc_store_wake_listener_up", "1 while the shared store's wake-up listener is connected (0 on a single-node store).")

	m.tokensIssued = counter("qpc_tokens_issued_total", "Delivery tokens issued (blinded evaluations).")
	m.tokensRedeemed = counter("qpc_tokens_redeemed_total", "Delivery tokens spent by a committed create or send.")
	m.tokensRejected = counterVec("qpc_tokens_rejected_total", "Delivery tokens refused, by reason (the error code).", "reason")
	m.logins = counterVec("qpc_logins_total", "Account logins, by outcome.", "outcome")
	m.registrations = counterVec("qpc_registrations_total", "Account registrations, by outcome.", "outcome")

	m.keyPackagesUploaded = counter("qpc_key_packages_uploaded_total", "KeyPackages added to accounts' pools by accepted uploads.")
	m.keyPackageFetches = counterVec("qpc_key_package_fetches_total", "Paid KeyPackage fetches answered, by result (served, or empty: empty pool or unknown handle).", "result")

	m.ktEpochLag = gauge("qpc_kt_epoch_lag", "Key transparency: committed epochs the served checkpoint does not cover yet (0 without KT).")
	m.ktWitness.register(a)
	m.torEnabled = gauge("qpc_tor_enabled", "1 if the onion service is configured.")
	m.torUp = gauge("qpc_tor_onion_published", "1 while the onion service descriptor is published.")
	m.ready = gauge("qpc_ready", "1 while /readyz answers ready.")
	m.draining = gauge("qpc_draining", "1 once a graceful shutdown has begun.")

	// Series that exist before the first event, so that rate() in alert
	// rules and dashboards has a zero to start from.
	for _, l := range []string{LimitConnections, LimitConnectionsPerAddr, LimitRequestRate, LimitDraining, LimitRequestTimeout,
		LimitConnectionsPerNet, LimitConnectionsTor, LimitDeliveryBytes, LimitSubscriptions,
		LimitKTPublish, LimitKTQueue, LimitKTProofs, LimitRequestBytes} {
		m.limitRefusals.WithLabelValues(l)
	}
	for _, t := range []string{TransportUDP, TransportTor} {
		m.connsAccepted.WithLabelValues(t)
		m.connsOpen.WithLabelValues(t)
	}
	for _, o := range []string{OutcomeSuccess, OutcomeFailure, OutcomeRateLimited, OutcomeAbandoned, OutcomeError} {
		m.logins.WithLabelValues(o)
		m.registrations.WithLabelValues(o)
	}
	for _, r := range []string{FetchServed, FetchEmpty} {
		m.keyPackageFetches.WithLabelValues(r)
	}
	for _, c := range []wire.Code{wire.CodeTokenMissing, wire.CodeTokenInvalid, wire.CodeTokenSpent, wire.CodeTokenExpired} {
		m.tokensRejected.WithLabelValues(CodeLabel(c))
	}
	for _, k := range requestKinds {
		m.requests.WithLabelValues(k)
	}
	m.requestErrors.WithLabelValues(KindLabel(wire.KindSend), CodeLabel(wire.CodeInternal))
	return m
}

// Registry is where the collectors live; register further collectors of
// the same server here.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// RequestKinds lists every value of the kind label but "other" and
// KindUnread: a fixed set, so that no client input becomes a label.
func RequestKinds() []string { return append([]string(nil), requestKinds...) }

var requestKinds = []string{
	"client_hello", "create_mailbox", "send", "fetch", "subscribe", "ack",
	"delete_mailbox", "health", "account", "token_keys", "issue_tokens", "token_quota",
	"kt_publish", "kt_lookup", "kt_lookup_batch", "kt_history", "kt_consistency", "kt_checkpoint", "kt_tile",
	"upload_key_packages", "fetch_key_package",
}

// KindLabel is the label value of a request kind: a fixed name, or
// "other" for any kind that is not a request (so a client cannot mint
// label values).
func KindLabel(k wire.Kind) string {
	switch k {
	case wire.KindClientHello:
		return "client_hello"
	case wire.KindCreateMailbox:
		return "create_mailbox"
	case wire.KindSend:
		return "send"
	case wire.KindFetch:
		return "fetch"
	case wire.KindSubscribe:
		return "subscribe"
	case wire.KindAck:
		return "ack"
	case wire.KindDeleteMailbox:
		return "delete_mailbox"
	case wire.KindHealth:
		return "health"
	case wire.KindAccountRequest:
		return "account"
	case wire.KindTokenKeys:
		return "token_keys"
	case wire.KindIssueTokens:
		return "issue_tokens"
	case wire.KindTokenQuota:
		return "token_quota"
	case wire.KindKTPublish:
		return "kt_publish"
	case wire.KindKTLookup:
		return "kt_lookup"
	case wire.KindKTLookupBatch:
		return "kt_lookup_batch"
	case wire.KindKTHistory:
		return "kt_history"
	case wire.KindKTConsistency:
		return "kt_consistency"
	case wire.KindKTCheckpoint:
		return "kt_checkpoint"
	case wire.KindKTTile:
		return "kt_tile"
	case wire.KindUploadKeyPackages:
		return "upload_key_packages"
	case wire.KindFetchKeyPackage:
		return "fetch_key_package"
	}
	return "other"
}

// KindUnread labels errors sent before a request could be read: a
// malformed record, or a refusal by a limit.
const KindUnread = "unread"

// CodeLabel is the label value of an error code: its protocol name.
func CodeLabel(c wire.Code) string { return c.String() }

// Request counts one request of kind k.
func (m *Metrics) Request(kind string) {
	if m != nil {
		m.requests.WithLabelValues(kind).Inc()
	}
}

// RequestError counts one Error record sent for a request of kind.
func (m *Metrics) RequestError(kind string, c wire.Code) {
	if m != nil {
		m.requestErrors.WithLabelValues(kind, CodeLabel(c)).Inc()
	}
}

// ObserveRequest records how long a request of kind took since start
// (call it deferred with the time the request was read).
func (m *Metrics) ObserveRequest(kind string, start time.Time) {
	if m != nil {
		m.requestDuration.WithLabelValues(kind).Observe(time.Since(start).Seconds())
	}
}

// Refused counts one refusal by a limit (one of the Limit constants).
func (m *Metrics) Refused(limit string) {
	if m != nil {
		m.limitRefusals.WithLabelValues(limit).Inc()
	}
}

// ConnOpened counts an accepted connection on transport; ConnClosed
// undoes the open gauge.
func (m *Metrics) ConnOpened(transport string) {
	if m != nil {
		m.connsAccepted.WithLabelValues(transport).Inc()
		m.connsOpen.WithLabelValues(transport).Inc()
	}
}

// ConnClosed marks a connection on transport closed.
func (m *Metrics) ConnClosed(transport string) {
	if m != nil {
		m.connsOpen.WithLabelValues(transport).Dec()
	}
}

// Hello counts a completed hello that chose version v.
func (m *Metrics) Hello(v uint16) {
	if m != nil {
		m.hellos.WithLabelValues(versionLabel(v)).Inc()
	}
}

func versionLabel(v uint16) string { return strconv.Itoa(int(v)) }

// StreamStarted and StreamDone track the request streams in progress.
func (m *Metrics) StreamStarted() {
	if m != nil {
		m.streamsOpen.Inc()
	}
}

// StreamDone undoes StreamStarted.
func (m *Metrics) StreamDone() {
	if m != nil {
		m.streamsOpen.Dec()
	}
}

// SetRequestBytes sets the bytes request streams' record buffers hold.
func (m *Metrics) SetRequestBytes(n int64) {
	if m != nil {
		m.requestBytes.Set(float64(n))
	}
}

// SetDeliveryBytes sets the envelope bytes delivery pages hold.
func (m *Metrics) SetDeliveryBytes(n int64) {
	if m != nil {
		m.deliveryBytes.Set(float64(n))
	}
}

// ObserveCommit feeds one write transaction of the store's group-commit
// writer; pass it as store.Options.OnCommit (through a closure, since this
// package does not import the store).
func (m *Metrics) ObserveCommit(ops int, d time.Duration, failed bool) {
	if m == nil {
		return
	}
	if failed {
		m.commitFailures.Inc()
		return
	}
	m.commitDuration.Observe(d.Seconds())
	m.commitOps.Observe(float64(ops))
}

// TokensIssued counts n tokens issued.
func (m *Metrics) TokensIssued(n int) {
	if m != nil {
		m.tokensIssued.Add(float64(n))
	}
}

// TokenRedeemed counts one token spent by a committed write.
func (m *Metrics) TokenRedeemed() {
	if m != nil {
		m.tokensRedeemed.Inc()
	}
}

// TokenRejected counts one token refused with code c.
func (m *Metrics) TokenRejected(c wire.Code) {
	if m != nil {
		m.tokensRejected.WithLabelValues(CodeLabel(c)).Inc()
	}
}

// Login counts one login by outcome (an Outcome constant).
func (m *Metrics) Login(outcome string) {
	if m != nil {
		m.logins.WithLabelValues(outcome).Inc()
	}
}

// Registration counts one registration by outcome.
func (m *Metrics) Registration(outcome string) {
	if m != nil {
		m.registrations.WithLabelValues(outcome).Inc()
	}
}

// KeyPackagesUploaded counts n KeyPackages added to pools.
func (m *Metrics) KeyPackagesUploaded(n int) {
	if m != nil {
		m.keyPackagesUploaded.Add(float64(n))
	}
}

// KeyPackageFetched counts one paid fetch by result: served (a
// KeyPackage went out) or not (FetchEmpty).
func (m *Metrics) KeyPackageFetched(served bool) {
	if m == nil {
		return
	}
	r := FetchEmpty
	if served {
		r = FetchServed
	}
	m.keyPackageFetches.WithLabelValues(r).Inc()
}

// SetKTEpochLag is for the key-transparency log: how many epochs the
// latest published (signed) checkpoint trails the map's current epoch.
// Zero is healthy; the alert rules fire when it stays above 1.
func (m *Metrics) SetKTEpochLag(epochs int) {
	if m != nil {
		m.ktEpochLag.Set(float64(epochs))
	}
}

// KTPublish is what the key-transparency log reports of its checkpoint
// publication (kt.PublishStats): cumulative counts since it opened.
type KTPublish struct {
	WitnessedSize   uint64
	WitnessRequests uint64
	WitnessFailures uint64
	Unwitnessed     uint64
	Latency         time.Duration
}

// ktWitnessSeries are the witness series: gauges, and counters read from
// the last report (the log counts; the server reports at scrape time).
type ktWitnessSeries struct {
	mu       sync.Mutex
	last     KTPublish
	size     prometheus.Gauge
	latency  prometheus.Gauge
	requests prometheus.CounterFunc
	failures prometheus.CounterFunc
	unwit    prometheus.CounterFunc
}

func (s *ktWitnessSeries) register(a promauto.Factory) {
	read := func(get func(*KTPublish) uint64) func() float64 {
		return func() float64 {
			s.mu.Lock()
			defer s.mu.Unlock()
			return float64(get(&s.last))
		}
	}
	s.size = a.NewGauge(prometheus.GaugeOpts{
		Name: "qpc_kt_witnessed_size", Help: "Key transparency: size of the newest served checkpoint that satisfies the witness policy (0 without one).",
	})
	s.latency = a.NewGauge(prometheus.GaugeOpts{
		Name: "qpc_kt_publish_latency_seconds", Help: "Key transparency: the last epoch's log append to its served (under a witness policy: cosigned) checkpoint.",
	})
	s.requests = a.NewCounterFunc(prometheus.CounterOpts{
		Name: "qpc_kt_witness_requests_total", Help: "Key transparency: add-checkpoint requests sent to witnesses.",
	}, read(func(k *KTPublish) uint64 { return k.WitnessRequests }))
	s.failures = a.NewCounterFunc(prometheus.CounterOpts{
		Name: "qpc_kt_witness_failures_total", Help: "Key transparency: add-checkpoint requests that failed (no answer, or a status other than 200).",
	}, read(func(k *KTPublish) uint64 { return k.WitnessFailures }))
	s.unwit = a.NewCounterFunc(prometheus.CounterOpts{
		Name: "qpc_kt_unwitnessed_checkpoints_total", Help: "Key transparency: checkpoints served without the witness quorum (kt_witness_fail_open); clients pinned to the policy refuse them.",
	}, read(func(k *KTPublish) uint64 { return k.Unwitnessed }))
}

// SetKTPublish is for the key-transparency log: its checkpoint
// publication and witnesses.
func (m *Metrics) SetKTPublish(p KTPublish) {
	if m == nil {
		return
	}
	s := &m.ktWitness
	s.mu.Lock()
	s.last = p
	s.mu.Unlock()
	s.size.Set(float64(p.WitnessedSize))
	s.latency.Set(p.Latency.Seconds())
}

// SetTorStatus is for the onion service: whether it is configured, and
// whether its descriptor is published now.
func (m *Metrics) SetTorStatus(enabled, published bool) {
	if m != nil {
		m.torEnabled.Set(b2f(enabled))
		m.torUp.Set(b2f(published && enabled))
	}
}

// WakeReceived counts a wake-up from the shared store (a mailbox another
// node stored a message in or deleted).
func (m *Metrics) WakeReceived() {
	if m != nil {
		m.wakes.Inc()
	}
}

// SetWakeListener records whether the shared store's wake-up listener is
// connected.
func (m *Metrics) SetWakeListener(up bool) {
	if m != nil {
		m.wakeListener.Set(b2f(up))
	}
}

// SetReady mirrors /readyz; SetDraining marks the start of a shutdown.
func (m *Metrics) SetReady(ready bool) {
	if m != nil {
		m.ready.Set(b2f(ready))
	}
}

// SetDraining records that a graceful shutdown has begun.
func (m *Metrics) SetDraining() {
	if m != nil {
		m.draining.Set(1)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
