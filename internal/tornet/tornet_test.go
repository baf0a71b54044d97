package tornet

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// alive reports which of pids still exist (zombies count: they were not
// reaped, so something still holds them).
func alive(pids []int) []int {
	var left []int
	for _, pid := range pids {
		if syscall.Kill(pid, 0) == nil {
			left = append(left, pid)
		}
	}
	return left
}

// TestCloseAfterFailedStart: a start cut short (here by its context, as a
// failing test would) leaves processes running; Close stops every one.
func TestCloseAfterFailedStart(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Cut the start short once every tor has written its pid file, long
	// before the first consensus.
	go func() {
		for {
			n := 0
			for _, name := range []string{"auth1", "auth2", "auth3", "relay1", "relay2"} {
				if _, err := os.Stat(filepath.Join(dir, name, "pid")); err == nil {
					n++
				}
			}
			if n == 5 || ctx.Err() != nil {
				cancel()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	n, err := New(ctx, Options{Dir: dir, Relays: 2})
	if err == nil {
		n.Close()
		t.Fatal("the network started although its context was cancelled")
	}
	if n == nil {
		t.Fatalf("no network to close after %v", err)
	}
	pids := n.PIDs()
	if len(pids) != 5 {
		t.Errorf("%d tor processes running after the cut-short start, want 5", len(pids))
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if left := alive(pids); len(left) > 0 {
		t.Errorf("processes %v outlived Close", left)
	}
	if err := n.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestWatchdogKills: past MaxLifetime the network is killed whatever the
// test is doing, and New reports it.
func TestWatchdogKills(t *testing.T) {
	// On a loaded machine the network may take longer to start its first
	// tor than the watchdog allows; then nothing was tested, and the test
	// tries again with a longer lifetime instead of failing or passing.
	for _, lifetime := range []time.Duration{10 * time.Second, 25 * time.Second, 60 * time.Second} {
		if watchdogKills(t, lifetime) {
			return
		}
		t.Logf("the watchdog (%v) fired before any tor started; trying a longer lifetime", lifetime)
	}
	t.Fatal("the watchdog fired before any tor started, even at 60 s: nothing was tested")
}

// watchdogKills runs one network under a watchdog of the given lifetime
// and checks that every process it started is gone after it fired. It
// reports false if no tor had started by then.
func watchdogKills(t *testing.T, lifetime time.Duration) bool {
	var pids []int
	done := make(chan error, 1)
	var n *Network
	start := time.Now()
	go func() {
		var err error
		n, err = New(context.Background(), Options{Dir: t.TempDir(), Relays: 2, MaxLifetime: lifetime})
		done <- err
	}()
	var err error
	select {
	case err = <-done:
	case <-time.After(lifetime + 50*time.Second):
		t.Fatalf("New still waiting 50 s after the watchdog (%v) should have fired", lifetime)
	}
	if err == nil {
		// Fast enough to finish first: the watchdog must still fire.
		pids = n.PIDs()
		time.Sleep(time.Until(start.Add(lifetime + 2*time.Second)))
	}
	// Close waits for the watchdog's Close to finish.
	n.Close()
	for _, p := range n.snapshot() {
		pids = append(pids, p.cmd.Process.Pid)
	}
	if len(pids) == 0 {
		return false
	}
	if left := alive(pids); len(left) > 0 {
		t.Errorf("processes %v outlived the watchdog", left)
	}
	if n != nil && len(n.PIDs()) != 0 {
		t.Errorf("PIDs after the watchdog: %v", n.PIDs())
	}
	return true
}

func TestMissingTor(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if _, err := New(context.Background(), Options{}); !errors.Is(err, ErrNoTor) {
		t.Fatalf("New without tor on PATH: %v, want ErrNoTor", err)
	}
}
