package client

import (
	"fmt"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
)

// TestMaxCoverRate: the largest rate SetCover accepts, rounded down to two
// significant digits, always fits 80 % of the quota per epoch, and the
// next two-digit rate above it does not.
func TestMaxCoverRate(t *testing.T) {
	day := 24 * time.Hour
	for _, c := range []struct {
		quota int
		epoch time.Duration
		want  float64
	}{
		{1000, day, 0.0092},          // 800 a day: 0.009259…/s
		{100000, day, 0.92},          // the CLI tests' server
		{100, time.Hour, 0.022},      // the e2e servers with quota 100
		{108000, day, 1},             // exactly 1/s: the boundary fits
		{1, day, 9.2e-6},             // tiny
		{3, time.Hour, 0.00066},      // 2.4 an hour
		{1 << 20, time.Minute, 100},  // capped at SetCover's ceiling
		{0, day, 0},                  // no room
		{1000, 0, 0},                 // a nonsense epoch
		{4500, 90 * time.Second, 40}, // exactly 40/s
	} {
		q := protocol.TokenQuotaStatus{Quota: c.quota, EpochLength: c.epoch}
		if got := MaxCoverRate(q); got != c.want {
			t.Errorf("MaxCoverRate(%d per %v) = %g, want %g", c.quota, c.epoch, got, c.want)
		}
	}
	for _, epoch := range []time.Duration{time.Minute, time.Hour, 7 * time.Hour, day} {
		for quota := 1; quota <= 200000; quota = quota*3/2 + 1 {
			q := protocol.TokenQuotaStatus{Quota: quota, EpochLength: epoch}
			r := MaxCoverRate(q)
			if r <= 0 || !coverFits(r, q) {
				t.Fatalf("%d per %v: MaxCoverRate %g does not fit", quota, epoch, r)
			}
			if back, _ := strconv.ParseFloat(fmt.Sprintf("%g", r), 64); back != r {
				t.Fatalf("%d per %v: %g does not survive printing", quota, epoch, r)
			}
			if r == 100 {
				continue
			}
			unit := math.Pow(10, math.Floor(math.Log10(r))-1)
			if next := r + unit; coverFits(next*(1+1e-9), q) {
				t.Fatalf("%d per %v: MaxCoverRate %g, but %g fits too", quota, epoch, r, next)
			}
		}
	}
}

// TestCoverQuotaErrorText: the refusal says what the rate costs, what the
// server issues, the 80 % rule and the largest rate that fits.
func TestCoverQuotaErrorText(t *testing.T) {
	for _, c := range []struct {
		rate float64
		q    protocol.TokenQuotaStatus
		want string
	}{
		{0.05, protocol.TokenQuotaStatus{Quota: 1000, EpochLength: 24 * time.Hour},
			"cover at 0.05/s spends 4,320 tokens a day; this server issues 1,000 a day per account, and cover may use at most 80 % of them: choose at most 0.0092/s"},
		{1, protocol.TokenQuotaStatus{Quota: 100, EpochLength: time.Hour},
			"cover at 1/s spends 86,400 tokens a day; this server issues 100 per 1h epoch per account (2,400 a day), and cover may use at most 80 % of them: choose at most 0.022/s"},
		{0.5, protocol.TokenQuotaStatus{Quota: 30, EpochLength: 90 * time.Second},
			"cover at 0.5/s spends 43,200 tokens a day; this server issues 30 per 90s epoch per account (28,800 a day), and cover may use at most 80 % of them: choose at most 0.26/s"},
		{0.001, protocol.TokenQuotaStatus{Quota: 0, EpochLength: 24 * time.Hour},
			"cover at 0.001/s spends 86 tokens a day; this server issues 0 a day per account, and cover may use at most 80 % of them: this quota leaves no room for cover traffic"},
	} {
		e := &CoverQuotaError{Rate: c.rate, Quota: c.q, MaxRate: MaxCoverRate(c.q)}
		if got := e.Error(); got != c.want {
			t.Errorf("got  %s\nwant %s", got, c.want)
		}
	}
}
