package pgqueue_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/quicprochat/qpc/internal/pgtest"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/ktpg/pgqueue"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func open(t *testing.T, url string, fence func(context.Context, pgx.Tx) error) *pgqueue.Queue {
	t.Helper()
	q, err := pgqueue.Open(context.Background(), url, pgqueue.Options{Fence: fence, FallbackPoll: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func upd(label string) kt.QueuedUpdate {
	return kt.QueuedUpdate{Label: label, Value: []byte("v " + label), Version: 1}
}

// TestQueueAcrossNodes: two queues on one database (two nodes) share the
// bound on queued updates and the one-update-per-label rule; a withdrawn
// update is gone, a taken one cannot be withdrawn; a settled outcome
// reaches the waiter on the other node.
func TestQueueAcrossNodes(t *testing.T) {
	url := pgtest.DB(t)
	a, b := open(t, url, nil), open(t, url, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const max = 4
	ids := map[string]int64{}
	for i := range max {
		q := a
		if i%2 == 1 {
			q = b
		}
		label := fmt.Sprintf("l%d", i)
		id, err := q.Add(ctx, upd(label), max)
		if err != nil {
			t.Fatal(err)
		}
		ids[label] = id
	}
	if _, err := b.Add(ctx, upd("l0"), max+1); !errors.Is(err, kt.ErrLabelQueued) {
		t.Fatalf("a second update of a label queued on the other node: %v, want ErrLabelQueued", err)
	}
	if _, err := b.Add(ctx, upd("other"), max); !errors.Is(err, kt.ErrQueueFull) {
		t.Fatalf("an update past the bound, counted over both nodes: %v, want ErrQueueFull", err)
	}
	if ok, err := b.Withdraw(ctx, ids["l3"]); err != nil || !ok {
		t.Fatalf("withdraw: %v %v", ok, err)
	}
	taken, err := a.Take(ctx, 7, 10)
	if err != nil || len(taken) != max-1 {
		t.Fatalf("take: %d updates, %v", len(taken), err)
	}
	for i, u := range taken {
		if u.Label != fmt.Sprintf("l%d", i) || u.Epoch != 7 || u.ID != ids[u.Label] {
			t.Fatalf("taken %d: %+v", i, u)
		}
	}
	if ok, err := b.Withdraw(ctx, ids["l1"]); err != nil || ok {
		t.Fatalf("withdraw of a taken update: %v %v, want refused", ok, err)
	}
	done := make(chan kt.Published, 1)
	go func() {
		p, err := b.Wait(ctx, ids["l1"])
		if err != nil {
			p.Err = err
		}
		done <- p
	}()
	results := []kt.Published{{Version: 1, Epoch: 7}, {Version: 1, Epoch: 7}, {Err: kt.ErrTooManyVersions}}
	if err := a.Settle(ctx, []int64{taken[0].ID, taken[1].ID, taken[2].ID}, results); err != nil {
		t.Fatal(err)
	}
	if p := <-done; p.Err != nil || p.Epoch != 7 || p.Version != 1 {
		t.Fatalf("the waiter on the other node: %+v", p)
	}
	if p, err := a.Wait(ctx, ids["l2"]); err != nil || !errors.Is(p.Err, kt.ErrTooManyVersions) {
		t.Fatalf("a refused update's outcome: %+v %v", p, err)
	}
	// Settled, the labels may be queued again.
	if _, err := b.Add(ctx, upd("l0"), max); err != nil {
		t.Fatal(err)
	}
}

// TestAttackQueueFenced: a queue whose fence refuses (its node lost the
// sequencer lease) cannot take, settle or requeue: the updates stay as
// they were for the lease's holder.
func TestAttackQueueFenced(t *testing.T) {
	url := pgtest.DB(t)
	fenced := errors.New("fenced off")
	holder := open(t, url, nil)
	former := open(t, url, func(context.Context, pgx.Tx) error { return fenced })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id, err := holder.Add(ctx, upd("alice"), 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := former.Take(ctx, 1, 10); !errors.Is(err, fenced) {
		t.Fatalf("take by a fenced node: %v", err)
	}
	taken, err := holder.Take(ctx, 1, 10)
	if err != nil || len(taken) != 1 {
		t.Fatalf("take by the holder: %d, %v", len(taken), err)
	}
	if err := former.Settle(ctx, []int64{id}, []kt.Published{{Version: 9, Epoch: 1}}); !errors.Is(err, fenced) {
		t.Fatalf("settle by a fenced node: %v", err)
	}
	if err := former.Requeue(ctx, []int64{id}); !errors.Is(err, fenced) {
		t.Fatalf("requeue by a fenced node: %v", err)
	}
	still, err := holder.Taken(ctx)
	if err != nil || len(still) != 1 || still[0].ID != id {
		t.Fatalf("after the fenced node's attempts: %+v, %v", still, err)
	}
}
