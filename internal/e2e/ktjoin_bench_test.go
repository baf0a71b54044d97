package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/mls"
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
// run is small (groups of 4, one join each, 20 ms); QPC_BENCH=1 makes
// groups of QPC_JOIN_MEMBERS (default 128) and times QPC_JOIN_RUNS joins
// (default 3) of each at each one-way delay of QPC_JOIN_DELAYS (default
// "0,20ms,50ms"), and, in the same run, one member's MLS processing of a
// Welcome to a group of that size (mls.Join), the Show line of issue 22
// item 4 (docs/benchmarks.md):
//
//	QPC_BENCH=1 go test ./internal/e2e -run TestMessengerGroupJoinKT -v -timeout 60m
//
// The creator's Welcomes wait for its wallet's scheduled refills (a few
// seconds each, client/linking.go), as a real creator's would.
func TestMessengerGroupJoinKT(t *testing.T) {
	n, joins := 4, 1
	delays := []time.Duration{20 * time.Millisecond}
	if benchEnabled() {
		n, joins = 128, 3
		delays = []time.Duration{0, 20 * time.Millisecond, 50 * time.Millisecond}
		if s := os.Getenv("QPC_JOIN_MEMBERS"); s != "" {
			n, _ = strconv.Atoi(s)
		}
		if s := os.Getenv("QPC_JOIN_RUNS"); s != "" {
			joins, _ = strconv.Atoi(s)
		}
		if s := os.Getenv("QPC_JOIN_DELAYS"); s != "" {
			delays = nil
			for _, f := range strings.Split(s, ",") {
				d, err := time.ParseDuration(f)
				if err != nil {
					t.Fatal(err)
				}
				delays = append(delays, d)
			}
		}
		if joins*len(delays) > n-1 {
			t.Fatalf("%d joins at %d delays need more than %d members", joins, len(delays), n-1)
		}
	}
	ms := startMessengerServerWith(t, func(o *server.Options) {
		o.TokenQuota = 1 << 20
		o.MaxConnsPerAddr = 1 << 16
		o.MaxStreamsPerAddr, o.MaxStreamsTotal = 1<<20, 1<<20
		o.RequestRate, o.RequestBurst = 1e6, 1<<20
	})
	// The joiners reach the server through a proxy that delays every
	// datagram by the delay under test each way, so that a lookup waits
	// as it does on a network and not only on the two shared cores.
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
		times    map[time.Duration][]time.Duration // by delay: the join, the first Sync
		kt       map[time.Duration][]time.Duration // its lookups (lookupMembers)
	}
	ktWork := &lookupTimes{}
	vs := []*variant{{name: "one at a time", parallel: 1}, {name: "concurrent", parallel: 0}}
	for vi, v := range vs {
		prefix := fmt.Sprintf("j%d", vi)
		v.times, v.kt = map[time.Duration][]time.Duration{}, map[time.Duration][]time.Duration{}
		owner, err := newUserErr(ctx, t, ms, prefix+"-owner", func(o *client.Options) { o.RefillMean = 200 * time.Millisecond })
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
		setup := time.Now()
		stopRefills := owner.StartRefills(ctx)
		if err := owner.CreateGroup(ctx, prefix, handles); errors.Is(err, client.ErrQueued) {
			t.Logf("%s: %v (the outbox sends the rest)", prefix, err)
		} else if err != nil {
			t.Fatalf("%s: %v", prefix, err)
		}
		for {
			if p, err := owner.Pending(); err != nil {
				t.Fatal(err)
			} else if p == 0 {
				break
			}
			// A group larger than the wallet waits for scheduled refills,
			// each an account exchange apart from anonymous dials
			// (client/linking.go); then the outbox sends what it can.
			owner.Sync(ctx)
			if ctx.Err() != nil {
				t.Fatal("the creator's Welcomes never left the outbox")
			}
			time.Sleep(100 * time.Millisecond)
		}
		stopRefills()
		t.Logf("%s: group of %d set up (Welcomes sent) in %v", prefix, n, time.Since(setup).Round(time.Second))
	}
	j := 0
	for range joins {
		for _, delay := range delays {
			proxy.delay.Store(int64(delay))
			for _, v := range vs {
				m := v.members[j]
				start := time.Now()
				before := ktWork.n()
				// In a big group the joiner's announcements to every member
				// (a token each) can outrun its wallet: they wait in the
				// outbox for its refills, the join is done.
				ev, err := m.Sync(ctx)
				d := time.Since(start)
				if err != nil && !errors.Is(err, client.ErrQueued) {
					t.Fatalf("%s sync: %v", m.Handle(), err)
				}
				for _, e := range ev {
					if e.Kind == client.EventAlarm {
						t.Errorf("%s: alarm %v", m.Handle(), e.Alarm)
					}
				}
				kw, ok := ktWork.since(before)
				if !ok {
					t.Fatalf("%s joined without looking the members up together (lookupMembers)", m.Handle())
				}
				if !slices.ContainsFunc(ev, func(e client.Event) bool { return e.Kind == client.EventJoined }) {
					t.Fatalf("%s did not join in its first sync", m.Handle())
				}
				v.kt[delay] = append(v.kt[delay], kw)
				v.times[delay] = append(v.times[delay], d)
			}
			j++
		}
	}
	proxy.delay.Store(0)
	mlsJoin := mlsJoinTime(t, n, joins)
	med := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2]
	}
	looked := n - 2 // every member but the creator (a contact) and oneself
	t.Logf("group of %d: a member's first sync (join, %d members looked up), GOMAXPROCS=%d, %d joins each per delay, alternating; one member's mls.Join of the Welcome (median of %d): %v", n, looked, runtime.GOMAXPROCS(0), joins, joins, mlsJoin.Round(time.Microsecond))
	for _, delay := range delays {
		for _, v := range vs {
			t.Logf("  %v each way, %-14s join median %7.3f s (%.1f x mls.Join); its KT lookups median %7.3f s = %.4f s per member looked up   (joins %v; lookups %v)",
				delay, v.name, med(v.times[delay]).Seconds(), med(v.times[delay]).Seconds()/mlsJoin.Seconds(), med(v.kt[delay]).Seconds(), med(v.kt[delay]).Seconds()/float64(looked), v.times[delay], v.kt[delay])
		}
		t.Logf("  %v each way, concurrent / one at a time: join %.2f, KT lookups %.2f", delay,
			med(vs[1].times[delay]).Seconds()/med(vs[0].times[delay]).Seconds(), med(vs[1].kt[delay]).Seconds()/med(vs[0].kt[delay]).Seconds())
	}
}

// mlsJoinTime is one member's MLS processing of a Welcome to a group of n
// (the client's suite, basic credentials): the median of runs mls.Join
// calls on the Welcome cut for that member (mls.WelcomeFor), as the
// client sends it.
func mlsJoinTime(t *testing.T, n, runs int) time.Duration {
	t.Helper()
	ident := func(name string) *mls.Identity {
		id, err := mls.NewBasicIdentity(client.DefaultSuite, []byte(name))
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	creator, err := mls.Create(ident("creator"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var first *mls.KeyPackagePrivate
	var pub []*mls.KeyPackage
	for i := 1; i < n; i++ {
		kp, err := mls.NewKeyPackage(ident(fmt.Sprintf("member-%03d", i)), nil)
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = kp
		}
		pub = append(pub, &kp.KeyPackage)
	}
	res, err := creator.Add(pub...)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := first.KeyPackage.Ref()
	if err != nil {
		t.Fatal(err)
	}
	w, err := mls.WelcomeFor(res.Welcome, ref)
	if err != nil {
		t.Fatal(err)
	}
	var ds []time.Duration
	for range max(runs, 1) {
		start := time.Now()
		if _, err := mls.Join(w, first, nil, nil); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, time.Since(start))
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
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
