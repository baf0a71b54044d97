package pgstore

// SetNotifyMode sets how s's sends notify ("batch", "send" or "off"),
// for the benchmarks that compare them.
func SetNotifyMode(s *Store, mode string) {
	s.mode = map[string]notifyMode{"batch": notifyPerBatch, "send": notifyPerSend, "off": notifyOff}[mode]
}
