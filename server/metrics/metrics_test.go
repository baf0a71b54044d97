package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/quicprochat/qpc/wire"
)

// A nil *Metrics records nothing and never panics, so servers built
// without metrics need no checks at every call site.
func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.Request("send")
	m.RequestError("send", wire.CodeQuota)
	m.ObserveRequest("send", time.Now())
	m.Refused(LimitRequestRate)
	m.ConnOpened(TransportUDP)
	m.ConnClosed(TransportUDP)
	m.Hello(1)
	m.ObserveCommit(3, time.Millisecond, false)
	m.TokensIssued(2)
	m.TokenRedeemed()
	m.TokenRejected(wire.CodeTokenSpent)
	m.Login(OutcomeSuccess)
	m.KeyPackagesUploaded(3)
	m.KeyPackageFetched(true)
	m.SetKTEpochLag(3)
	m.SetTorStatus(true, true)
	m.WatchStore(func() (StoreTotals, error) { return StoreTotals{}, nil }, time.Second)
}

func TestKindLabelIsClosed(t *testing.T) {
	seen := map[string]bool{}
	for k := range 256 {
		l := KindLabel(wire.Kind(k))
		seen[l] = true
		if wire.IsRequest(wire.Kind(k)) == (l == "other") {
			t.Errorf("kind 0x%02x labelled %q", k, l)
		}
	}
	if len(seen) != len(requestKinds)+1 {
		t.Errorf("%d labels for %d request kinds", len(seen), len(requestKinds))
	}
}

func TestGaugesForOtherSubsystems(t *testing.T) {
	m := New("v")
	m.SetKTEpochLag(4)
	m.SetTorStatus(true, false)
	if v := gauge(t, m.ktEpochLag); v != 4 {
		t.Errorf("kt lag %v", v)
	}
	if gauge(t, m.torEnabled) != 1 || gauge(t, m.torUp) != 0 {
		t.Error("tor enabled but unpublished")
	}
	m.SetTorStatus(false, true) // published means nothing when not enabled
	if gauge(t, m.torUp) != 0 {
		t.Error("tor published while disabled")
	}
	m.ObserveCommit(5, 2*time.Millisecond, false)
	m.ObserveCommit(1, time.Second, true)
	if gauge(t, m.commitFailures) != 1 {
		t.Error("commit failure not counted")
	}
	calls := 0
	m.WatchStore(func() (StoreTotals, error) {
		calls++
		return StoreTotals{Messages: 7, WriterQueue: 2, IdempotencyKeys: 9, Unreadable: 4}, nil
	}, time.Hour)
	for range 3 {
		fams, err := m.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, f := range fams {
			if len(f.Metric) == 1 && f.Metric[0].Gauge != nil {
				got[f.GetName()] = f.Metric[0].Gauge.GetValue()
			}
			if len(f.Metric) == 1 && f.Metric[0].Counter != nil {
				got[f.GetName()] = f.Metric[0].Counter.GetValue()
			}
		}
		if got["qpc_store_messages_queued"] != 7 || got["qpc_store_write_queue_depth"] != 2 || got["qpc_store_idempotency_keys"] != 9 || got["qpc_store_unreadable_messages_total"] != 4 {
			t.Fatalf("store gauges: %v", got)
		}
	}
	if calls != 1 {
		t.Errorf("store totals read %d times within maxAge, want 1", calls)
	}
}

func TestKeyPackageCounters(t *testing.T) {
	m := New("v")
	m.KeyPackagesUploaded(3)
	m.KeyPackagesUploaded(2)
	m.KeyPackageFetched(true)
	m.KeyPackageFetched(false)
	m.KeyPackageFetched(false)
	if v := gauge(t, m.keyPackagesUploaded); v != 5 {
		t.Errorf("uploaded %v, want 5", v)
	}
	if v := gauge(t, m.keyPackageFetches.WithLabelValues(FetchServed)); v != 1 {
		t.Errorf("served %v, want 1", v)
	}
	if v := gauge(t, m.keyPackageFetches.WithLabelValues(FetchEmpty)); v != 2 {
		t.Errorf("empty %v, want 2", v)
	}
	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]int{}
	for _, f := range fams {
		names[f.GetName()] = len(f.Metric)
	}
	if names["qpc_key_packages_uploaded_total"] != 1 || names["qpc_key_package_fetches_total"] != 2 {
		t.Errorf("registered series: %v", names)
	}
}

// gauge reads one gauge or counter.
func gauge(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Gauge != nil {
		return d.Gauge.GetValue()
	}
	return d.Counter.GetValue()
}
