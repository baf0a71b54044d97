package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// StoreTotals are store-wide sums: nothing per mailbox.
type StoreTotals struct {
	Mailboxes   uint64 // mailboxes that exist
	Messages    uint64 // messages waiting to be fetched and acked, all mailboxes
	Bytes       uint64 // their envelope bytes
	WriterQueue int    // write operations waiting for the group-commit writer
	// IdempotencyKeys is the size of the store's in-memory idempotency
	// index: one key per message accepted within the TTL, about 50 bytes
	// of RAM each (docs/storage.md).
	IdempotencyKeys int
	// Unreadable counts the times the store found a stored message
	// without its key in the key-slot file (docs/storage.md, "Envelopes
	// at rest"): such a message cannot be delivered. Nonzero means the
	// key-slot file was lost, replaced or damaged.
	Unreadable uint64
}

// WatchStore registers the queue-depth gauges, read from fn at scrape
// time. A result is reused for maxAge (zero: every scrape calls fn), for
// an fn that costs more than a scrape should. A second call replaces fn
// (a reopened store) and keeps the registration.
func (m *Metrics) WatchStore(fn func() (StoreTotals, error), maxAge time.Duration) {
	if m == nil {
		return
	}
	m.totalsOnce.Do(func() {
		m.totals = &totalsCollector{}
		m.reg.MustRegister(m.totals)
	})
	m.totals.mu.Lock()
	m.totals.fn, m.totals.maxAge, m.totals.at = fn, maxAge, time.Time{}
	m.totals.mu.Unlock()
}

var (
	descMailboxes  = prometheus.NewDesc("qpc_store_mailboxes", "Mailboxes in the store.", nil, nil)
	descMessages   = prometheus.NewDesc("qpc_store_messages_queued", "Messages held for their recipients, all mailboxes together.", nil, nil)
	descBytes      = prometheus.NewDesc("qpc_store_bytes_queued", "Envelope bytes held for their recipients, all mailboxes together.", nil, nil)
	descWriterQ    = prometheus.NewDesc("qpc_store_write_queue_depth", "Write operations waiting for the group-commit writer.", nil, nil)
	descIdemKeys   = prometheus.NewDesc("qpc_store_idempotency_keys", "Message IDs held in the in-memory idempotency index (one per message accepted within the TTL).", nil, nil)
	descUnreadable = prometheus.NewDesc("qpc_store_unreadable_messages_total", "Times a stored message was found without its key in the key-slot file (it cannot be delivered; see the log).", nil, nil)
	descScrapeErr  = prometheus.NewDesc("qpc_store_totals_errors_total", "Failed reads of the store totals.", nil, nil)
)

type totalsCollector struct {
	fn     func() (StoreTotals, error)
	maxAge time.Duration

	mu     sync.Mutex
	at     time.Time
	last   StoreTotals
	errors uint64
}

func (c *totalsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMailboxes, descMessages, descBytes, descWriterQ, descIdemKeys, descUnreadable, descScrapeErr} {
		ch <- d
	}
}

func (c *totalsCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	if c.fn != nil && (c.at.IsZero() || time.Since(c.at) >= c.maxAge) {
		t, err := c.fn()
		if err != nil {
			// Keep serving the last good totals: a closed store during a
			// drain should not make the gauges drop to zero.
			c.errors++
		} else {
			c.last, c.at = t, time.Now()
		}
	}
	t, errs := c.last, c.errors
	c.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descMailboxes, prometheus.GaugeValue, float64(t.Mailboxes))
	ch <- prometheus.MustNewConstMetric(descMessages, prometheus.GaugeValue, float64(t.Messages))
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.GaugeValue, float64(t.Bytes))
	ch <- prometheus.MustNewConstMetric(descWriterQ, prometheus.GaugeValue, float64(t.WriterQueue))
	ch <- prometheus.MustNewConstMetric(descIdemKeys, prometheus.GaugeValue, float64(t.IdempotencyKeys))
	ch <- prometheus.MustNewConstMetric(descUnreadable, prometheus.CounterValue, float64(t.Unreadable))
	ch <- prometheus.MustNewConstMetric(descScrapeErr, prometheus.CounterValue, float64(errs))
}
