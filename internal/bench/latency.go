package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"
)

// Latencies are the send-to-delivery latencies of each phase of a run,
// sorted ascending, one per delivered message.
type Latencies struct {
	QPC, Baseline []time.Duration
}

// RunLatencies runs the baseline phase and then the qpc phase in-process,
// like Run with Baseline set and no Server, and returns besides the
// headline figures every latency sample, for a distribution plot. The
// Result carries the throughput, ratio, percentiles and loss counts of
// both phases; the store's group-commit statistics are those of the qpc
// phase.
func RunLatencies(ctx context.Context, cfg Config) (Result, Latencies, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return Result{}, Latencies{}, err
	}
	if cfg.Server != "" || cfg.Tokens {
		return Result{}, Latencies{}, errors.New("bench: RunLatencies runs in-process without the tokens phase")
	}
	res := Result{
		Scenario:      cfg.Scenario,
		Target:        "in-process",
		RecordBytes:   cfg.RecordSize,
		EnvelopeBytes: EnvelopeSize(cfg.RecordSize),
		Senders:       cfg.Senders,
	}
	b, err := runBaseline(ctx, cfg)
	if err != nil {
		return res, Latencies{}, fmt.Errorf("baseline: %w", err)
	}
	runtime.GC()
	q, err := runInProcess(ctx, cfg, &res, 0)
	if err != nil {
		return res, Latencies{}, err
	}
	res.setBaseline(b)
	res.setQPC(q)
	return res, Latencies{QPC: q.tally.latencies, Baseline: b.tally.latencies}, nil
}

// LatencyPercentile is the nearest-rank percentile p (0 < p <= 100) of
// sorted latencies in milliseconds, as Result reports them; 0 for none.
func LatencyPercentile(sorted []time.Duration, p float64) float64 {
	return round(percentile(sorted, p))
}
