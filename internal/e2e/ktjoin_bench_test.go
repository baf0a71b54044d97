package e2e

import (
	"context"
	"errors"
	"fmt"
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
// the key-transparency work (issue 22 item 4; docs/adr/0019 and
// docs/adr/0041-lazy-member-checks.md). Two groups of the same size are
// made in one run: the members of one look every other member up before
// they accept the group (Options.KTMembersAtJoin, concurrently on
// connections of their own: ADR 0019, as before), those of the other
// check each member at its first message and look up at most one member
// a flush to reach it (ADR 0041). Joins alternate between the two groups,
// one at a time, and the test reports the medians and their ratios, with
// each join's parts (client Timing): the KT lookups, the outbox pass and
// its Sends. The default run is small (groups of 4, one join each, 20 ms);
// QPC_BENCH=1 makes groups of QPC_JOIN_MEMBERS (default 128) and times
// QPC_JOIN_RUNS joins (default 3) of each at each one-way delay of
// QPC_JOIN_DELAYS (default "0,20ms,50ms"), and, in the same run, one
// member's MLS processing of a Welcome to a group of that size
// (mls.Join), the Show line of issue 22 item 4 (docs/benchmarks.md):
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
		name    string
		atJoin  bool
		members []*client.Client
		parts   []*partTimes
		times   map[time.Duration][]time.Duration // by delay: the join, the first Sync
		kt      map[time.Duration][]time.Duration // its KT lookups (kt.lookup, kt.members)
		flush   map[time.Duration][]time.Duration // its outbox passes (send.flush)
		sends   map[time.Duration][]int           // its Sends (send.wire)
		lookups map[time.Duration][]int           // its single lookups (kt.lookup)
	}
	vs := []*variant{{name: "all at join", atJoin: true}, {name: "lazy"}}
	for vi, v := range vs {
		prefix := fmt.Sprintf("j%d", vi)
		v.times, v.kt, v.flush = map[time.Duration][]time.Duration{}, map[time.Duration][]time.Duration{}, map[time.Duration][]time.Duration{}
		v.sends, v.lookups = map[time.Duration][]int{}, map[time.Duration][]int{}
		owner, err := newUserErr(ctx, t, ms, prefix+"-owner", func(o *client.Options) { o.RefillMean = 200 * time.Millisecond })
		if err != nil {
			t.Fatal(err)
		}
		handles := make([]string, n-1)
		v.members = make([]*client.Client, n-1)
		v.parts = make([]*partTimes, n-1)
		parallel(t, n-1, func(i int) error {
			handles[i] = fmt.Sprintf("%s-m%03d", prefix, i)
			opts := messengerOptions(t.TempDir())
			opts.KTMembersAtJoin = v.atJoin
			v.parts[i] = &partTimes{}
			opts.Timing = v.parts[i].add
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
				m, pt := v.members[j], v.parts[j]
				pt.reset()
				start := time.Now()
				// The joiner's announcements to members whose mailboxes it
				// does not know wait in its outbox (ADR 0041), or for its
				// wallet's refills: the join is done.
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
				if !slices.ContainsFunc(ev, func(e client.Event) bool { return e.Kind == client.EventJoined }) {
					t.Fatalf("%s did not join in its first sync", m.Handle())
				}
				all, _ := pt.get(client.TimeKTMembers)
				if all > 0 != v.atJoin {
					t.Fatalf("%s (%s): every member looked up at the join: %v", m.Handle(), v.name, all > 0)
				}
				// A lazy join looks up one member it cannot reach, and the
				// sender of each member's message that came with the
				// Welcome (an earlier joiner's announcement).
				lk, nl := pt.get(client.TimeKTLookup)
				fl, _ := pt.get(client.TimeSendFlush)
				_, ns := pt.get(client.TimeSendWire)
				v.kt[delay] = append(v.kt[delay], all+lk)
				v.flush[delay] = append(v.flush[delay], fl)
				v.sends[delay] = append(v.sends[delay], ns)
				v.lookups[delay] = append(v.lookups[delay], nl)
				v.times[delay] = append(v.times[delay], d)
			}
			j++
		}
	}
	proxy.delay.Store(0)
	mlsJoin := mlsJoinTime(t, n, max(joins, 5))
	med := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2]
	}
	looked := n - 2 // every member but the creator (a contact) and oneself
	t.Logf("group of %d: a member's first sync (join), GOMAXPROCS=%d, %d joins each per delay, alternating; one member's mls.Join of its cut Welcome (median of %d): %v", n, runtime.GOMAXPROCS(0), joins, max(joins, 5), mlsJoin.Round(time.Microsecond))
	for _, delay := range delays {
		for _, v := range vs {
			t.Logf("  %v each way, %-11s join median %7.3f s (%.1f x mls.Join); KT lookups median %7.3f s = %.4f s per member of the group; outbox pass %7.3f s, Sends %v, single lookups %v   (joins %v; KT %v; outbox %v)",
				delay, v.name, med(v.times[delay]).Seconds(), med(v.times[delay]).Seconds()/mlsJoin.Seconds(), med(v.kt[delay]).Seconds(), med(v.kt[delay]).Seconds()/float64(looked),
				med(v.flush[delay]).Seconds(), v.sends[delay], v.lookups[delay], v.times[delay], v.kt[delay], v.flush[delay])
		}
		t.Logf("  %v each way, lazy / all at join: join %.2f, KT lookups %.3f", delay,
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

// partTimes sums what a client's Options.Timing is told, by part.
type partTimes struct {
	mu  sync.Mutex
	sum map[string]time.Duration
	n   map[string]int
}

func (p *partTimes) add(part string, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sum == nil {
		p.sum, p.n = map[string]time.Duration{}, map[string]int{}
	}
	p.sum[part] += d
	p.n[part]++
}

func (p *partTimes) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sum, p.n = nil, nil
}

// get is part's total time and count since the last reset.
func (p *partTimes) get(part string) (time.Duration, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sum[part], p.n[part]
}
