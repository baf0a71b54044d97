package kt

import (
	"bufio"
	"errors"
	"fmt"
	"strings"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/tessera"
	"golang.org/x/mod/sumdb/note"
)

// ErrCosignature reports a checkpoint without the witness cosignatures
// the pinned witness policy requires (docs/key-transparency.md §1.6): the
// log did not get it cosigned by a quorum of witnesses, so it may be a
// history shown to this client alone.
var ErrCosignature = errors.New("kt: checkpoint is not cosigned by the witnesses the policy requires")

// CosignatureError is ErrCosignature with its evidence: the checkpoint
// the server served, signed by the log, and the witnesses whose
// cosignatures on it verified.
type CosignatureError struct {
	Checkpoint []byte
	Cosigners  []string
	Policy     string // the quorum, as the policy text names it
}

func (e *CosignatureError) Error() string {
	who := "none"
	if len(e.Cosigners) > 0 {
		who = strings.Join(e.Cosigners, ", ")
	}
	return fmt.Sprintf("%v (quorum %s; valid cosignatures from: %s)", ErrCosignature, e.Policy, who)
}

func (e *CosignatureError) Unwrap() error { return ErrCosignature }

// PolicyWitness is one witness a policy names.
type PolicyWitness struct {
	Name string // the key name, as in its cosignature lines
	VKey string // a C2SP signed-note verifier key of type 0x04 (tlog-cosignature, cosignature/v1)
	URL  string // its tlog-witness submission prefix; empty in a client's copy
}

// WitnessPolicy is a witness policy in the Sigsum / Tessera policy format
// (https://git.glasklar.is/sigsum/core/sigsum-go/-/blob/main/doc/policy.md,
// with C2SP signed-note vkeys):
//
//	witness <name> <vkey> [<url>]
//	group <name> <k>|any|all <member> ...
//	quorum <name>|none
//
// "log" lines are ignored, "#" starts a comment. The log (server) needs a
// URL on every witness line; a client's pinned copy need not have them.
// The semantics are Tessera's (tessera.NewWitnessGroupFromPolicy).
type WitnessPolicy struct {
	text      string
	quorum    string
	group     tessera.WitnessGroup
	witnesses []PolicyWitness
	verifiers []note.Verifier
}

// noURL stands in for a witness line without a URL, which Tessera's
// parser requires; it is never contacted (a log refuses such a policy).
const noURL = "http://witness-url.invalid/"

// ParseWitnessPolicy parses a policy. A policy whose quorum is "none"
// requires nothing.
func ParseWitnessPolicy(text string) (*WitnessPolicy, error) {
	var canon, forTessera strings.Builder
	p := &WitnessPolicy{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "log":
			continue
		case "witness":
			if len(f) != 3 && len(f) != 4 {
				return nil, fmt.Errorf("kt: witness policy: %q: want witness <name> <vkey> [<url>]", line)
			}
			v, err := fnote.NewVerifierForCosignatureV1(f[2])
			if err != nil {
				return nil, fmt.Errorf("kt: witness policy: witness %s: %w", f[1], err)
			}
			w := PolicyWitness{Name: v.Name(), VKey: f[2]}
			if len(f) == 4 {
				w.URL = f[3]
			} else {
				f = append(f, noURL)
			}
			p.witnesses = append(p.witnesses, w)
			p.verifiers = append(p.verifiers, v)
		case "quorum":
			if len(f) == 2 {
				p.quorum = f[1]
			}
		}
		canon.WriteString(strings.Join(f[:len(f)-boolInt(len(f) == 4 && f[3] == noURL)], " ") + "\n")
		forTessera.WriteString(strings.Join(f, " ") + "\n")
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("kt: witness policy: %w", err)
	}
	g, err := tessera.NewWitnessGroupFromPolicy([]byte(forTessera.String()))
	if err != nil {
		return nil, fmt.Errorf("kt: witness policy: %w", err)
	}
	p.group, p.text = g, canon.String()
	return p, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Text is the policy in canonical form: one directive a line, comments
// and "log" lines dropped. It parses back to the same policy.
func (p *WitnessPolicy) Text() string { return p.text }

// Required reports whether the policy requires any cosignature.
func (p *WitnessPolicy) Required() bool { return p != nil && p.group.N > 0 }

// Witnesses lists the witnesses the policy names.
func (p *WitnessPolicy) Witnesses() []PolicyWitness {
	return append([]PolicyWitness(nil), p.witnesses...)
}

// Satisfied reports whether the signed note raw carries cosignatures
// that verify from a quorum of the policy's witnesses. It does not check
// the log's own signature (OpenCheckpoint does).
func (p *WitnessPolicy) Satisfied(raw []byte) bool {
	return !p.Required() || p.group.Satisfied(raw)
}

// Cosigners lists the witnesses whose cosignatures on raw verify.
func (p *WitnessPolicy) Cosigners(raw []byte) []string {
	var out []string
	for i, v := range p.verifiers {
		if n, err := note.Open(raw, note.VerifierList(v)); err == nil && len(n.Sigs) == 1 {
			out = append(out, p.witnesses[i].Name)
		}
	}
	return out
}

// Check returns a *CosignatureError unless raw satisfies the policy.
func (p *WitnessPolicy) Check(raw []byte) error {
	if p.Satisfied(raw) {
		return nil
	}
	return &CosignatureError{Checkpoint: append([]byte(nil), raw...), Cosigners: p.Cosigners(raw), Policy: p.quorum}
}

// tesseraGroup is the group the log hands Tessera to collect
// cosignatures; every witness needs a URL.
func (p *WitnessPolicy) tesseraGroup() (tessera.WitnessGroup, error) {
	for _, w := range p.witnesses {
		if w.URL == "" {
			return tessera.WitnessGroup{}, fmt.Errorf("kt: witness policy: witness %s has no URL to submit checkpoints to", w.Name)
		}
	}
	return p.group, nil
}

// PublishStats describe the checkpoints the directory published.
type PublishStats struct {
	Witnessed       bool          // a witness policy is configured
	WitnessedSize   uint64        // size of the newest served checkpoint that satisfies it
	WitnessRequests uint64        // add-checkpoint requests sent to witnesses
	WitnessFailures uint64        // of those, failed (no answer, or a status other than 200)
	Unwitnessed     uint64        // checkpoints served without a quorum (fail open)
	LastLatency     time.Duration // the last epoch's log append to its served checkpoint (cosigned, under a policy)
}

// PublishStats reports how checkpoint publication goes.
func (d *Directory) PublishStats() PublishStats {
	st := PublishStats{LastLatency: time.Duration(d.publishLatency.Load())}
	if w := d.log.wit; w != nil {
		st.Witnessed = true
		st.WitnessedSize = w.witnessed.Load()
		st.WitnessRequests = w.requests.Load()
		st.WitnessFailures = w.failures.Load()
		st.Unwitnessed = w.unwitnessed.Load()
	}
	return st
}
