package ratelimit

import "time"

// Bucket is a token bucket: Rate tokens per second, at most Burst held,
// full at creation. It is not safe for concurrent use; callers that share
// one hold their own lock. A clock that steps backwards adds nothing.
type Bucket struct {
	rate, burst, tokens float64
	last                time.Time
}

// NewBucket returns a full bucket whose clock starts at now.
func NewBucket(rate float64, burst int, now time.Time) *Bucket {
	return &Bucket{rate: rate, burst: float64(burst), tokens: float64(burst), last: now}
}

// Allow takes one token if there is one.
func (b *Bucket) Allow(now time.Time) bool { return b.AllowN(now, 1) }

// AllowN takes n tokens if there are n; otherwise it takes none.
func (b *Bucket) AllowN(now time.Time, n int) bool {
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(b.burst, b.tokens+el*b.rate)
		b.last = now
	}
	if b.tokens < float64(n) {
		return false
	}
	b.tokens -= float64(n)
	return true
}

// Return gives back n tokens taken for work that was not done, up to the
// burst.
func (b *Bucket) Return(n int) { b.tokens = min(b.burst, b.tokens+float64(n)) }
