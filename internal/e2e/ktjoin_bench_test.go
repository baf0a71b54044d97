package e2e

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/server"
)

// TestMessengerGroupJoinKT measures what a group's members wait for when
// they join: the first Sync after the creator added them, most of it the
// key-transparency lookups of every member they did not know (issue 22,
// docs/adr/0019-kt-batch-lookups.md). Two groups of the same size are
// made in one run: the members of one look the others up one at a time
// (KTLookupParallel 1: as before), those of the other with the default
// concurrency, each lookup on a connection of its own either way. Joins
// alternate between the two groups, one at a time, and the test reports
// the medians and their ratio. The default run is small (groups of 5,
// two joins each); QPC_BENCH=1 makes groups of QPC_JOIN_MEMBERS (default
// 128) and times five joins of each:
//
//	QPC_BENCH=1 go test ./internal/e2e -run TestMessengerGroupJoinKT -v -timeout 60m
func TestMessengerGroupJoinKT(t *testing.T) {
	n, joins := 5, 2
	if benchEnabled() {
		n, joins = 128, 5
		if s := os.Getenv("QPC_JOIN_MEMBERS"); s != "" {
			n, _ = strconv.Atoi(s)
		}
	}
	ms := startMessengerServerWith(t, func(o *server.Options) {
		o.TokenQuota = 1 << 20
		o.MaxConnsPerAddr = 1 << 16
		o.MaxStreamsPerAddr, o.MaxStreamsTotal = 1<<20, 1<<20
		o.RequestRate, o.RequestBurst = 1e6, 1<<20
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Minute)
	defer cancel()
	type variant struct {
		name     string
		parallel int
		members  []*client.Client
		times    []time.Duration
	}
	vs := []*variant{{name: "one at a time", parallel: 1}, {name: "concurrent", parallel: 0}}
	for vi, v := range vs {
		prefix := fmt.Sprintf("j%d", vi)
		owner, err := newUserErr(ctx, t, ms, prefix+"-owner", func(o *client.ClientOptions) { o.RefillMean = 100 * time.Millisecond })
		if err != nil {
			t.Fatal(err)
		}
		handles := make([]string, n-1)
		v.members = make([]*client.Client, n-1)
		parallel(t, n-1, func(i int) error {
			handles[i] = fmt.Sprintf("%s-m%03d", prefix, i)
			c, err := newUserErr(ctx, t, ms, handles[i], func(o *client.ClientOptions) { o.KTLookupParallel = v.parallel })
			v.members[i] = c
			if err == nil {
				_, err = c.AddContact(ctx, prefix+"-owner") // joins without an invitation
			}
			return err
		})
		if t.Failed() {
			t.FailNow()
		}
		stop := owner.StartRefills(ctx)
		if err := owner.CreateGroup(ctx, prefix, handles); err != nil {
			t.Logf("%s: %v (the outbox sends the rest)", prefix, err)
		}
		for {
			if p, err := owner.Pending(); err != nil {
				t.Fatal(err)
			} else if p == 0 {
				break
			}
			// The outbox retries as the wallet refills (StartRefills);
			// until then Sync reports the Welcomes still waiting.
			owner.Sync(ctx)
			select {
			case <-ctx.Done():
				t.Fatal("the creator's Welcomes never left the outbox")
			case <-time.After(100 * time.Millisecond):
			}
		}
		stop()
	}
	for j := range joins {
		for _, v := range vs {
			m := v.members[j]
			start := time.Now()
			ev := mustSync(t, ctx, m)
			d := time.Since(start)
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
	t.Logf("group of %d: a member's first sync (join, %d members looked up), GOMAXPROCS=%d, %d joins each, alternating", n, looked, runtime.GOMAXPROCS(0), joins)
	for _, v := range vs {
		t.Logf("  %-14s median %8.3f s = %.4f s per member looked up   (runs %v)", v.name, med(v.times).Seconds(), med(v.times).Seconds()/float64(looked), v.times)
	}
	t.Logf("  concurrent / one at a time: %.2f", cur.Seconds()/old.Seconds())
}
