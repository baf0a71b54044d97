package client

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/quicprochat/qpc/wire"
)

// TestQuotaOut: a quota refusal warns once and spaces further asks by
// quotaRetry; the first tick that goes through again says so once; other
// errors change nothing.
func TestQuotaOut(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	quota := fmt.Errorf("wallet: refill: %w", wire.Errorf(wire.CodeQuota, "token quota for this epoch is used up"))
	var q quotaOut
	if _, ok := q.observe(now, nil, 1); ok || q.wait(now) {
		t.Fatal("a good tick warned or waits")
	}
	if _, ok := q.observe(now, errors.New("network down"), 1); ok || q.wait(now) {
		t.Fatal("another error counted as the quota")
	}
	w, ok := q.observe(now, quota, 2)
	if !ok || w.Kind != EventWarning || !strings.Contains(w.Text, "paused") || !strings.Contains(w.Text, "172800 tokens a day") {
		t.Fatalf("first refusal: %v %+v", ok, w)
	}
	if !q.wait(now.Add(quotaRetry-time.Second)) || q.wait(now.Add(quotaRetry)) {
		t.Fatal("asks again sooner or later than quotaRetry")
	}
	if _, ok := q.observe(now.Add(quotaRetry), quota, 2); ok {
		t.Fatal("warned twice for one outage")
	}
	if !q.wait(now.Add(quotaRetry + time.Second)) {
		t.Fatal("the second refusal did not restart the wait")
	}
	w, ok = q.observe(now.Add(3*quotaRetry), nil, 2)
	if !ok || !strings.Contains(w.Text, "resumed") || q.wait(now.Add(3*quotaRetry)) {
		t.Fatalf("recovery: %v %+v", ok, w)
	}
	if _, ok := q.observe(now.Add(4*quotaRetry), nil, 2); ok {
		t.Fatal("said resumed twice")
	}
}
