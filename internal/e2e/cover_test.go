package e2e

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/stats"
	"github.com/quicprochat/qpc/server"
)

// coverRun starts a fresh pair of users, lets the first follow for dur
// (in cover mode at rate if rate > 0) while the test makes it send real
// texts at the given offsets, and returns every Send the first user put on
// the wire during the run. The second user must then have every text.
func coverRun(t *testing.T, ms *messengerServer, name string, rate float64, dur time.Duration, at []time.Duration) []sendRec {
	t.Helper()
	log := newSendLog()
	// A rate far above any quota spends the wallet within seconds: its
	// refill schedule runs fast here to keep up (sends never refill).
	a := newUserWith(t, ms, name+"-a", func(o *client.Options) { o.Tap, o.RefillMean = log.tap, time.Second })
	b := newUser(t, ms, name+"-b")
	connect(t, a, b)
	if rate > 0 {
		// Far above the test server's quota on purpose: the runs are
		// short, and SetCover would refuse such a rate.
		if err := a.SetCoverUnchecked(&client.CoverOptions{Rate: rate, FetchEvery: time.Second}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), dur+time.Minute)
	defer cancel()
	fctx, stop := context.WithTimeout(ctx, dur)
	defer stop()
	mark := log.count()
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		done <- a.Follow(fctx, func(e client.Event) {
			if e.Kind == client.EventAlarm {
				t.Errorf("%s: alarm %v", name, e.Alarm)
			}
		})
	}()
	// In cover mode a text waits for the next tick. A tick can fall between
	// Send returning and the check, so one such text proves nothing; most
	// of them leaving at once would.
	atOnce := 0
	for i, d := range at {
		time.Sleep(time.Until(start.Add(d)))
		if err := a.Send(ctx, b.Handle(), fmt.Sprint("real ", i)); err != nil {
			t.Fatal(err)
		}
		if n, _ := a.Pending(); rate > 0 && n == 0 {
			atOnce++
		}
	}
	if len(at) > 0 && atOnce > len(at)/2 {
		t.Errorf("%s: in cover mode %d of %d texts left at once on Send", name, atOnce, len(at))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	sends := log.since(mark)
	if got := texts(t, b); len(got) != len(at) {
		t.Fatalf("%s: the peer got %d of %d texts", name, len(got), len(at))
	}
	st, err := a.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Cover.On != (rate > 0) || st.Cover.Rate != rate {
		t.Fatalf("%s: status cover %+v", name, st.Cover)
	}
	if rate > 0 {
		t.Logf("%s: status: cover on, %.1f/s, %.0f tokens/day, %d-byte envelopes, %.1f MB/day, %d tokens left",
			name, st.Cover.Rate, st.Cover.TokensPerDay, st.Cover.Envelope, st.Cover.BytesPerDay/1e6, st.Tokens)
		if st.Cover.TokensPerDay != rate*86400 || st.Cover.BytesPerDay != rate*86400*float64(st.Cover.Envelope) {
			t.Errorf("%s: cover cost %+v", name, st.Cover)
		}
		if s := sends[0].size; s != st.Cover.Envelope {
			t.Errorf("%s: sends are %d bytes, status says %d", name, s, st.Cover.Envelope)
		}
	}
	return sends
}

func gaps(s []sendRec) []float64 {
	at := make([]time.Time, len(s))
	for i, r := range s {
		at[i] = r.at
	}
	slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
	var out []float64
	for i := 1; i < len(at); i++ {
		out = append(out, at[i].Sub(at[i-1]).Seconds())
	}
	return out
}

func sizes(s []sendRec) []int {
	var out []int
	for _, r := range s {
		if !slices.Contains(out, r.size) {
			out = append(out, r.size)
		}
	}
	return out
}

// TestCoverTraffic: in cover mode the sequence of (time, size) of the
// sends a client makes is statistically the same whether its user sent 0
// or 20 real messages (two-sample KS on the gaps; one size), and without
// cover mode the same observation tells them apart.
func TestCoverTraffic(t *testing.T) {
	dur, rate := 20*time.Second, 5.0
	if os.Getenv("QPC_LONG") == "1" {
		dur = 60 * time.Second
	}
	ms := startMessengerServer(t)
	real := make([]time.Duration, 20)
	for i := range real {
		real[i] = time.Duration(rand.Int64N(int64(dur - 3*time.Second)))
	}
	slices.Sort(real)

	var (
		idle, busy []sendRec
		gi, gb     []float64
	)
	// A 1 % test rejects identical distributions in one run out of a
	// hundred; a real difference is rejected again by a second,
	// independent run, chance only once in ten thousand.
	for run := 1; ; run++ {
		idle = coverRun(t, ms, fmt.Sprint("idle", run), rate, dur, nil)
		busy = coverRun(t, ms, fmt.Sprint("busy", run), rate, dur, real)
		gi, gb = gaps(idle), gaps(busy)
		D, p := stats.KSTwoSample(gi, gb)
		t.Logf("run %d: cover %.0f/s for %v: 0 real messages → %d sends (sizes %v), 20 real → %d sends (sizes %v); gaps: mean %.3f s vs %.3f s; two-sample KS D=%.4f p=%.3f",
			run, rate, dur, len(idle), sizes(idle), len(busy), sizes(busy), mean(gi), mean(gb), D, p)
		if p > 0.01 || raceDetector {
			break
		}
		if run == 2 {
			t.Errorf("cover traffic with and without real messages differs in two independent runs: D=%.4f p=%.3g", D, p)
			break
		}
	}
	if s := sizes(append(idle, busy...)); len(s) != 1 {
		t.Errorf("sends of several sizes in cover mode: %v", s)
	}
	// And all on one connection: a conversation's own connection would
	// show when real messages flow.
	for _, r := range append(idle, busy...) {
		if r.role != "cover" {
			t.Fatalf("in cover mode a send left on the %s connection", r.role)
		}
	}
	// Both follow the configured Poisson rate.
	expCDF := func(x float64) float64 {
		if x < 0 {
			return 0
		}
		return -math.Expm1(-rate * x)
	}
	for _, g := range [][]float64{gi, gb} {
		d1, p1 := stats.KSOneSample(g, expCDF)
		t.Logf("gaps against Exp(rate %.0f/s): n=%d D=%.4f p=%.3f", rate, len(g), d1, p1)
	}

	// Without cover mode: the same observer tells an idle user (no sends)
	// from a busy one (bursts of sends).
	burst := []time.Duration{}
	for b := range 4 {
		for i := range 5 {
			burst = append(burst, time.Duration(b)*time.Second+time.Duration(i)*50*time.Millisecond)
		}
	}
	plainIdle := coverRun(t, ms, "plain-idle", 0, 5*time.Second, nil)
	plainBusy := coverRun(t, ms, "plain-busy", 0, 5*time.Second, burst)
	D2, p2 := stats.KSTwoSample(gaps(plainBusy), gi)
	t.Logf("no cover: 0 real messages → %d sends, 20 real → %d sends; gaps of the busy user vs cover traffic: KS D=%.4f p=%.3g",
		len(plainIdle), len(plainBusy), D2, p2)
	if len(plainIdle) == len(plainBusy) && p2 > 0.01 {
		t.Errorf("without cover the observer could not tell idle from busy")
	}
}

// TestCoverQuotaWarning: cover traffic faster than the account's token
// quota allows runs the wallet dry. The user must be told once, with the
// cost of the rate, instead of messages silently waiting in the outbox.
func TestCoverQuotaWarning(t *testing.T) {
	ms := startMessengerServerWith(t, func(o *server.Options) { o.TokenQuota = 100 })
	// Sends never refill the wallet; its schedule does (fast here).
	a := newUserWith(t, ms, "quota-a", func(o *client.Options) { o.RefillMean = 100 * time.Millisecond })
	b := newUser(t, ms, "quota-b")
	connect(t, a, b)
	// SetCover would refuse this rate; the warning is for a rate set
	// unchecked (qpc cover --force) or a quota lowered since.
	if err := a.SetCoverUnchecked(&client.CoverOptions{Rate: 100, FetchEvery: time.Second}); err != nil {
		t.Fatal(err)
	}
	// A token pays for 8 Sends on the cover connection (SendPaid), so
	// the quota's 100 tokens last about 800 dummies, 8 s at full rate:
	// the run lasts until the warning came and 1 s more (in which no
	// second one may come), or 2 minutes (5 under the race detector: a
	// loaded 2-core machine sends far below the rate, and one race run
	// had not used the quota up in 60 s).
	limit := 2 * time.Minute
	if raceDetector {
		limit = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	var warnings []client.Event
	if err := a.Follow(ctx, func(e client.Event) {
		if e.Kind == client.EventWarning {
			warnings = append(warnings, e)
			if len(warnings) == 1 {
				time.AfterFunc(time.Second, cancel)
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 {
		t.Fatalf("%d warnings, want 1: %v", len(warnings), warnings)
	}
	for _, want := range []string{"WARNING cover traffic paused", "quota", "8640000 tokens a day", "qpc cover <rate>"} {
		if s := warnings[0].String(); !strings.Contains(s, want) {
			t.Errorf("%q lacks %q", s, want)
		}
	}
}

// TestCoverQuotaCheck: with a session, SetCover asks the server's token
// quota and refuses a rate whose dummies alone would take more than 80 %
// of it, naming the cost and the largest rate that fits; that rate and
// lower ones are stored. Without a session the rate is stored unchecked,
// and SetCover says so. Status shows the quota and the tokens issued in
// the current epoch.
func TestCoverQuotaCheck(t *testing.T) {
	ms := startMessengerServerWith(t, func(o *server.Options) { o.TokenQuota = 100 })
	a := newUser(t, ms, "check-a")
	b := newUser(t, ms, "check-b")
	connect(t, a, b)
	ctx := ctxT(t)

	// 100 tokens per 1 h epoch: cover may spend 80 an hour, 0.0222/s.
	const maxRate = 0.022
	for _, rate := range []float64{0.05, 0.0223, 50} {
		check, err := a.SetCover(ctx, &client.CoverOptions{Rate: rate})
		var qe *client.CoverQuotaError
		if !errors.As(err, &qe) {
			t.Fatalf("SetCover(%g) = %v, want a CoverQuotaError", rate, err)
		}
		if qe.MaxRate != maxRate || qe.Quota.Quota != 100 || check.Quota == nil || check.Quota.Quota != 100 {
			t.Errorf("SetCover(%g): %+v, check %+v", rate, qe, check)
		}
		t.Logf("SetCover(%g): %v", rate, err)
		for _, want := range []string{
			fmt.Sprintf("cover at %g/s spends %s tokens a day", rate, map[float64]string{0.05: "4,320", 0.0223: "1,927", 50: "4,320,000"}[rate]),
			"this server issues 100 per 1h epoch per account (2,400 a day)",
			"at most 80 % of them",
			"choose at most 0.022/s",
		} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%q lacks %q", err, want)
			}
		}
	}
	st, err := a.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Cover.On {
		t.Fatalf("a refused rate was stored: %+v", st.Cover)
	}

	// The largest rate that fits, and one below it, are stored.
	for _, rate := range []float64{0.01, maxRate} {
		check, err := a.SetCover(ctx, &client.CoverOptions{Rate: rate})
		if err != nil || check.Quota == nil || check.Quota.Quota != 100 || check.Unchecked != "" {
			t.Fatalf("SetCover(%g) = %+v, %v; want checked and stored", rate, check, err)
		}
		if st, err = a.Status(ctx); err != nil || !st.Cover.On || st.Cover.Rate != rate {
			t.Fatalf("status after SetCover(%g): %+v, %v", rate, st.Cover, err)
		}
	}

	// Status: the quota, and the tokens issued this epoch. The wallet takes
	// tokens in batches of 100, so registering took the whole quota.
	q := st.TokenQuota
	if !st.LoggedIn || q == nil || q.Quota != 100 || q.EpochLength != tokenEpoch || q.Issued != 100 || st.TokenQuotaError != "" {
		t.Fatalf("status token quota %+v (%q), want 100 of 100 per %v", q, st.TokenQuotaError, tokenEpoch)
	}
	if want := maxRate * 3600 / 100; math.Abs(st.Cover.QuotaShare-want) > 1e-9 {
		t.Errorf("cover quota share %v, want %v", st.Cover.QuotaShare, want)
	}
	// A new epoch: nothing issued in it yet.
	ms.clock.advance(tokenEpoch)
	st, err = a.Status(ctx)
	if err != nil || st.TokenQuota == nil || st.TokenQuota.Issued != 0 || st.TokenQuota.Epoch != q.Epoch+1 {
		t.Fatalf("status in the next epoch: %+v, %v", st.TokenQuota, err)
	}

	// Without a session: stored, but unchecked, and said so.
	if err := a.Logout(); err != nil {
		t.Fatal(err)
	}
	check, err := a.SetCover(ctx, &client.CoverOptions{Rate: 0.05})
	if err != nil || check.Unchecked == "" || check.Quota != nil {
		t.Fatalf("SetCover without a session = %+v, %v; want stored unchecked", check, err)
	}
	st, err = a.Status(ctx)
	if err != nil || st.LoggedIn || st.TokenQuota != nil || !st.Cover.On || st.Cover.Rate != 0.05 || st.Cover.QuotaShare != 0 {
		t.Fatalf("status without a session: %+v, %v", st, err)
	}
	// Off needs no check.
	if check, err := a.SetCover(ctx, nil); err != nil || check != (client.CoverCheck{}) {
		t.Fatalf("SetCover(nil) = %+v, %v", check, err)
	}
}
