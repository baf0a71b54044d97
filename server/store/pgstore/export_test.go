package pgstore

import "time"

// SetNotifyMode sets how s's sends notify ("batch", "send", "after" or "off"),
// for the benchmarks that compare them.
func SetNotifyMode(s *Store, mode string) {
	s.mode = map[string]notifyMode{"batch": notifyPerBatch, "send": notifyPerSend, "off": notifyOff, "after": notifyAfterCommit}[mode]
}

// SetListenIdle sets how long a listener waits silent before it pings,
// and returns the previous value.
func SetListenIdle(d time.Duration) time.Duration {
	old := listenIdle
	listenIdle = d
	return old
}
