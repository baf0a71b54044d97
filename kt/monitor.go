package kt

import (
	"crypto/sha256"
	"fmt"
)

// Alarm reports a version of an owner's label that the owner did not
// publish, or a published version the log does not show. Evidence is the
// signed checkpoint and the encoded history proof that show it: both verify
// under the log's key, so the alarm convinces a third party.
type Alarm struct {
	Version    uint32
	Value      []byte // what the log holds for Version (nil if it is missing)
	Reason     string
	Checkpoint []byte
	Proof      []byte
}

func (a Alarm) String() string { return fmt.Sprintf("kt alarm: version %d: %s", a.Version, a.Reason) }

// Monitor compares a verified history of the owner's label with the
// versions the owner published (version -> SHA-256 of the value) and
// returns an alarm for every version it did not publish, every value that
// differs, and every published version the history should hold but lacks.
// proof is the encoded HistoryProof h was verified from.
func Monitor(h *History, published map[uint32][32]byte, proof []byte) []Alarm {
	var alarms []Alarm
	alarm := func(v uint32, val []byte, reason string) {
		alarms = append(alarms, Alarm{Version: v, Value: val, Reason: reason, Checkpoint: h.Checkpoint.Raw, Proof: proof})
	}
	for _, e := range h.Versions {
		want, ok := published[e.Version]
		switch {
		case !ok:
			alarm(e.Version, e.Value, "a version the owner never published")
		case sha256.Sum256(e.Value) != want:
			alarm(e.Version, e.Value, "a value other than the one the owner published")
		}
	}
	latest := h.Latest()
	for v := range published {
		if v > latest {
			alarm(v, nil, "a published version the log does not hold")
		}
	}
	return alarms
}
