package kt

import "testing"

// TestEpochLag: 0 while lookups are served under the newest epoch; the
// number of newer committed epochs when the served view is older (as
// when the log stops producing checkpoints).
func TestEpochLag(t *testing.T) {
	d := newTestDir(t)
	for i, label := range []string{"alice", "bob", "carol"} {
		d.publish(t, label, []byte{byte(i + 1)})
	}
	lag, err := d.EpochLag()
	if err != nil || lag != 0 {
		t.Fatalf("after publishing: lag %d, %v; want 0", lag, err)
	}
	n, err := d.epochCount()
	if err != nil || n < 3 {
		t.Fatalf("epochs: %d, %v", n, err)
	}
	// Serve an old epoch, as a log that stopped checkpointing leaves it.
	v := *d.view.Load()
	v.epoch = 0
	d.view.Store(&v)
	if lag, err := d.EpochLag(); err != nil || lag != n-1 {
		t.Fatalf("view at epoch 0 of %d: lag %d, %v; want %d", n, lag, err, n-1)
	}
	d.view.Store(nil)
	if lag, _ := d.EpochLag(); lag != n {
		t.Fatalf("nothing served: lag %d, want %d", lag, n)
	}
}
