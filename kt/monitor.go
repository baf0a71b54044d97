package kt

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"slices"
)

// Alarm reports a version of an owner's label that the owner did not
// publish, or a published version the log does not show. Evidence is the
// signed checkpoint and the encoded history proof that show it: both verify
// under the log's key, so the alarm convinces a third party. A publish
// answered with a version other than the next one has no proof (the
// answer is not signed): Checkpoint and Proof are then empty.
type Alarm struct {
	Version    uint32
	Value      []byte // what the log holds for Version (nil if it is missing)
	Reason     string
	Checkpoint []byte
	Proof      []byte
}

func (a Alarm) String() string { return fmt.Sprintf("kt alarm: version %d: %s", a.Version, a.Reason) }

// OwnerState is what an owner remembers about its own label between
// monitoring runs (docs/key-transparency.md §4): the last version it
// verified as its own with the hash of that value, and the publishes it
// made after it, in order. Owners monitor by version, not by epoch: the
// next history starts exactly at Version, and every version after it
// must be one of Pending, in the order published. Persist it.
type OwnerState struct {
	Version uint32   // the last version verified as the owner's (0: none yet)
	Hash    [32]byte // SHA-256 of that version's value
	Pending []PendingPublish
}

// PendingPublish is a publish made after the verified version.
type PendingPublish struct {
	Hash    [32]byte // SHA-256 of the value
	Version uint32   // the version the server answered with; 0: no answer (lost, or not sent yet)
}

// Clone returns a deep copy.
func (s OwnerState) Clone() OwnerState {
	s.Pending = slices.Clone(s.Pending)
	return s
}

// Publishing records a publish about to be sent; it stays pending, with
// no version, until Published or a history shows it. Record it (and
// persist the state) before sending: a publish whose answer is lost may
// still land, and must not then look like a version the owner never made.
func (s *OwnerState) Publishing(value []byte) {
	s.Pending = append(s.Pending, PendingPublish{Hash: sha256.Sum256(value)})
}

// Published checks the server's answer to the last publish (value): it
// must be the next version after the versions known to be the owner's.
// Earlier publishes whose answers were lost may or may not have landed,
// so each widens the range by one. An answer outside it is an alarm (the
// server gave other versions in between, or lies about this one); the
// publish then stays pending with no version, for the history to settle.
func (s *OwnerState) Published(value []byte, version uint32) *Alarm {
	h := sha256.Sum256(value)
	i := len(s.Pending) - 1
	for ; i >= 0; i-- {
		if s.Pending[i].Version == 0 && s.Pending[i].Hash == h {
			break
		}
	}
	if i < 0 {
		return &Alarm{Version: version, Reason: "an answer to a publish that was not made"}
	}
	base, lost := s.Version, uint32(0)
	for _, p := range s.Pending[:i] {
		if p.Version != 0 {
			base, lost = p.Version, 0
		} else {
			lost++
		}
	}
	if version <= base || version > base+1+lost {
		want := fmt.Sprintf("%d", base+1)
		if lost > 0 {
			want = fmt.Sprintf("%d to %d", base+1, base+1+lost)
		}
		return &Alarm{Version: version, Value: value, Reason: fmt.Sprintf("the server answered a publish with version %d, want %s: it holds versions the owner did not make", version, want)}
	}
	s.Pending[i].Version = version
	return nil
}

// Check compares a verified history of the owner's label, asked from
// version s.Version at the newest epoch, with the state. It returns the
// state to keep and the alarms; with alarms the state is unchanged, so
// the next run raises them again. proof is the encoded HistoryProof h was
// verified from (evidence). The rules:
//
//   - the history starts at s.Version with the value the owner verified
//     (a greatest version below it is a log that lost versions);
//   - each later version is the next pending publish: the same value, and
//     the same version when the server answered one. A pending publish
//     with no answer may be skipped (it did not land before the later
//     one), and is then dropped: if it lands later, it is out of order;
//   - a pending publish the server answered must be in a complete history;
//   - nothing else: any other version is a key the server showed others
//     in the owner's name.
func (s OwnerState) Check(h *History, proof []byte) (OwnerState, []Alarm) {
	var alarms []Alarm
	alarm := func(v uint32, val []byte, reason string) {
		alarms = append(alarms, Alarm{Version: v, Value: val, Reason: reason, Checkpoint: h.Checkpoint.Raw, Proof: proof})
	}
	vs := h.Versions
	if s.Version > 0 {
		switch {
		case len(vs) == 0:
			alarm(s.Version, nil, fmt.Sprintf("the log shows no version of the label; version %d was verified before", s.Version))
			return s, alarms
		case vs[0].Version != s.Version:
			alarm(vs[0].Version, vs[0].Value, fmt.Sprintf("the log's greatest version is %d; version %d was verified before", vs[0].Version, s.Version))
			return s, alarms
		case subtle.ConstantTimeCompare(hashOf(vs[0].Value), s.Hash[:]) != 1:
			alarm(s.Version, vs[0].Value, "a value other than the one verified before")
			return s, alarms
		}
		vs = vs[1:]
	}
	next := s.Clone()
	pending := next.Pending
	for _, e := range vs {
		h := sha256.Sum256(e.Value)
		matched := false
		for len(pending) > 0 {
			p := pending[0]
			if p.Hash == h && (p.Version == 0 || p.Version == e.Version) {
				pending, matched = pending[1:], true
				break
			}
			if p.Version != 0 {
				break
			}
			pending = pending[1:] // a publish without an answer that did not land before this version
		}
		if !matched {
			alarm(e.Version, e.Value, "a version the owner never published (or not in this order)")
			continue
		}
		next.Version, next.Hash = e.Version, h
	}
	if !h.More {
		for _, p := range pending {
			if p.Version != 0 {
				alarm(p.Version, nil, "a published version the log does not hold")
			}
		}
	}
	if len(alarms) > 0 {
		return s, alarms
	}
	next.Pending = slices.Clone(pending)
	return next, nil
}

func hashOf(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}
