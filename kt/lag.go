package kt

// EpochLag is how many committed epochs the served view does not include
// yet: 0 when lookups are answered under the newest epoch. It grows when
// the log's checkpoint cannot be obtained (a stalled or failing log), so
// clients would verify against an old epoch; the server exports it as
// qpc_kt_epoch_lag.
func (d *Directory) EpochLag() (uint64, error) {
	n, err := d.epochCount()
	if err != nil {
		return 0, err
	}
	v := d.view.Load()
	if v == nil {
		return n, nil
	}
	if served := v.epoch + 1; served < n {
		return n - served, nil
	}
	return 0, nil
}
