package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/wire"
)

// TestMessengerGroupJoinKT measures what a group's members wait for when
// they join: the first Sync after the creator added them, and within it
// the key-transparency lookups of every member they did not know
// (client lookupMembers; issue 22, docs/adr/0019-kt-batch-lookups.md).
// Two groups of the same size are made in one run: the members of one
// look the others up one at a time (KTLookupParallel 1: as before), those
// of the other with the default concurrency, each lookup on a connection
// of its own either way. Joins alternate between the two groups, one at a
// time, and the test reports the medians and their ratios. The default
// run is small (groups of 4, one join each); QPC_BENCH=1 makes groups of
// QPC_JOIN_MEMBERS (default 128) and times five joins of each:
//
//	QPC_BENCH=1 QPC_JOIN_MEMBERS=11 go test ./internal/e2e -run TestMessengerGroupJoinKT -v -timeout 60m
//
// (A creator's Welcomes to many members wait for its wallet's refills,
// each after a quiet gap: groups much above 11 take long to set up.)
func TestMessengerGroupJoinKT(t *testing.T) {
	n, joins := 4, 1
	if benchEnabled() {
		n, joins = 128, 5
		if s := os.Getenv("QPC_JOIN_MEMBERS"); s != "" {
			n, _ = strconv.Atoi(s)
		}
		joins = min(joins, n-1)
	}
	ms := startMessengerServerWith(t, func(o *server.Options) {
		o.TokenQuota = 1 << 20
		o.MaxConnsPerAddr = 1 << 16
		o.MaxStreamsPerAddr, o.MaxStreamsTotal = 1<<20, 1<<20
		o.RequestRate, o.RequestBurst = 1e6, 1<<20
	})
	// The joiners reach the server through a proxy that delays every
	// datagram by QPC_JOIN_DELAY each way (default 20 ms: a 40 ms round
	// trip, short for Tor), so that a lookup waits as it does on a
	// network and not only on the two shared cores.
	delay := 20 * time.Millisecond
	if s := os.Getenv("QPC_JOIN_DELAY"); s != "" {
		var err error
		if delay, err = time.ParseDuration(s); err != nil {
			t.Fatal(err)
		}
	}
	proxy := newUDPProxy(t, ms.host)
	pa, err := wire.ParseAddress(ms.addr)
	if err != nil {
		t.Fatal(err)
	}
	pa.Host = proxy.addr()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Minute)
	defer cancel()
	type variant struct {
		name     string
		parallel int
		members  []*client.Client
		times    []time.Duration // the join: the first Sync
		kt       []time.Duration // its lookups (lookupMembers)
	}
	ktWork := &lookupTimes{}
	vs := []*variant{{name: "one at a time", parallel: 1}, {name: "concurrent", parallel: 0}}
	for vi, v := range vs {
		prefix := fmt.Sprintf("j%d", vi)
		owner, err := newUserErr(ctx, t, ms, prefix+"-owner", nil)
		if err != nil {
			t.Fatal(err)
		}
		handles := make([]string, n-1)
		v.members = make([]*client.Client, n-1)
		parallel(t, n-1, func(i int) error {
			handles[i] = fmt.Sprintf("%s-m%03d", prefix, i)
			opts := messengerOptions(t.TempDir())
			opts.KTLookupParallel = v.parallel
			opts.Logger = slog.New(ktWork)
			c, err := client.Init(ctx, pa.String(), ms.pin(), opts)
			if err != nil {
				return err
			}
			t.Cleanup(func() { c.Close() })
			if err := c.Register(ctx, handles[i], []byte("password of "+handles[i])); err != nil {
				return fmt.Errorf("register %s: %w", handles[i], err)
			}
			v.members[i] = c
			if err == nil {
				_, err = c.AddContact(ctx, prefix+"-owner") // joins without an invitation
			}
			return err
		})
		if t.Failed() {
			t.FailNow()
		}
		if err := owner.CreateGroup(ctx, prefix, handles); err != nil {
			t.Logf("%s: %v (the outbox sends the rest)", prefix, err)
		}
		for {
			if p, err := owner.Pending(); err != nil {
				t.Fatal(err)
			} else if p == 0 {
				break
			}
			// A group larger than the wallet waits for refills, each an
			// account exchange after a quiet gap without anonymous dials
			// (client/linking.go); then the outbox sends what it can.
			if err := owner.RefillIfEmpty(ctx); err != nil {
				t.Fatal(err)
			}
			owner.Sync(ctx)
			if ctx.Err() != nil {
				t.Fatal("the creator's Welcomes never left the outbox")
			}
		}
	}
	proxy.delay.Store(int64(delay))
	for j := range joins {
		for _, v := range vs {
			m := v.members[j]
			start := time.Now()
			before := ktWork.n()
			ev := mustSync(t, ctx, m)
			d := time.Since(start)
			kw, ok := ktWork.since(before)
			if !ok {
				t.Fatalf("%s joined without looking the members up together (lookupMembers)", m.Handle())
			}
			v.kt = append(v.kt, kw)
			if !slices.ContainsFunc(ev, func(e client.Event) bool { return e.Kind == client.EventJoined }) {
				t.Fatalf("%s did not join in its first sync", m.Handle())
			}
			v.times = append(v.times, d)
		}
	}
	med := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2]
	}
	old, cur := med(vs[0].times), med(vs[1].times)
	looked := n - 2 // every member but the creator (a contact) and oneself
	t.Logf("group of %d: a member's first sync (join, %d members looked up), %v each way, GOMAXPROCS=%d, %d joins each, alternating", n, looked, delay, runtime.GOMAXPROCS(0), joins)
	for _, v := range vs {
		t.Logf("  %-14s join median %7.3f s; its KT lookups median %7.3f s = %.4f s per member looked up   (joins %v; lookups %v)",
			v.name, med(v.times).Seconds(), med(v.kt).Seconds(), med(v.kt).Seconds()/float64(looked), v.times, v.kt)
	}
	t.Logf("  concurrent / one at a time: join %.2f, KT lookups %.2f", cur.Seconds()/old.Seconds(), med(vs[1].kt).Seconds()/med(vs[0].kt).Seconds())
}

// lookupTimes is a slog.Handler keeping the "took" of every "kt: looked
// up a group's members" record (client lookupMembers) and dropping the
// rest.
type lookupTimes struct {
	mu    sync.Mutex
	times []time.Duration
}

func (l *lookupTimes) Enabled(context.Context, slog.Level) bool { return true }
func (l *lookupTimes) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *lookupTimes) WithGroup(string) slog.Handler            { return l }
func (l *lookupTimes) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "kt: looked up a group's members" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "took" {
			l.mu.Lock()
			l.times = append(l.times, a.Value.Duration())
			l.mu.Unlock()
		}
		return true
	})
	return nil
}

func (l *lookupTimes) n() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.times)
}

// since sums the times recorded after the first n.
func (l *lookupTimes) since(n int) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var sum time.Duration
	for _, d := range l.times[n:] {
		sum += d
	}
	return sum, len(l.times) > n
}
