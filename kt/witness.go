package kt

import (
	"bufio"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
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
	shape := policyShape{}
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
			pub, err := cosignerKey(f[2])
			if err != nil {
				return nil, fmt.Errorf("kt: witness policy: witness %s: %w", f[1], err)
			}
			if err := shape.witness(f[1], pub); err != nil {
				return nil, fmt.Errorf("kt: witness policy: %w", err)
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
		case "group":
			if err := shape.group(f[1:]); err != nil {
				return nil, fmt.Errorf("kt: witness policy: %w", err)
			}
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

// policyShape holds, for each witness and group a policy defined so far,
// the Ed25519 keys of the witnesses under it. Tessera's parser takes any
// policy it can evaluate; a policy a client pins must also mean what it
// reads as, since the log's operator writes it
// (TestAttackWitnessPolicyOneWitnessTwice): a quorum of k is k distinct
// witnesses. So each key is named once, a group's members are distinct
// and share no witness (one cosignature would count for two members), and
// every group requires at least one member ("quorum none" is the one way
// to require nothing).
type policyShape map[string]map[string]bool

func (s policyShape) witness(name string, pub []byte) error {
	for other, keys := range s {
		if keys[string(pub)] && len(keys) == 1 {
			return fmt.Errorf("witnesses %s and %s have the same key: one witness counted twice", other, name)
		}
	}
	s[name] = map[string]bool{string(pub): true}
	return nil
}

// group checks "group <name> <k>|any|all <member> ..." (fields after
// "group"); Tessera checks the rest (names, known members, k ≤ members).
func (s policyShape) group(f []string) error {
	if len(f) < 2 {
		return nil // Tessera refuses it
	}
	name, members := f[0], f[1:]
	members = members[1:]
	if len(members) == 0 {
		return fmt.Errorf("group %s has no member: it would require nothing (write quorum none)", name)
	}
	if k := f[1]; k != "any" && k != "all" {
		if n, err := strconv.ParseUint(k, 10, 8); err == nil && n == 0 {
			return fmt.Errorf("group %s has threshold 0: it would require nothing (write quorum none)", name)
		}
	}
	keys := map[string]bool{}
	for _, m := range members {
		mk, ok := s[m]
		if !ok {
			return nil // Tessera refuses an unknown member
		}
		for k := range mk {
			if keys[k] {
				return fmt.Errorf("group %s: a witness is reached through two of its members (%s and another): one cosignature would count twice", name, m)
			}
			keys[k] = true
		}
	}
	s[name] = keys
	return nil
}

// cosignerKey checks a witness's verifier key, <name>+<hex key ID>+<base64
// (0x04 || Ed25519 public key)> (c2sp.org/signed-note § Verifier keys,
// c2sp.org/tlog-cosignature § Format: type 0x04 is cosignature/v1), with
// the key ID SHA-256(name || "\n" || 0x04 || key)[:4], and returns the
// public key. The verifier Tessera builds checks neither the ID nor that
// the type is 0x04: two vkeys differing in the ID field alone, or an
// ordinary 0x01 note key, would otherwise name one witness twice.
func cosignerKey(vkey string) ([]byte, error) {
	name, rest, ok1 := strings.Cut(vkey, "+")
	id, b64, ok2 := strings.Cut(rest, "+")
	raw, err := base64.StdEncoding.DecodeString(b64)
	if !ok1 || !ok2 || name == "" || len(id) != 8 || err != nil {
		return nil, errors.New("malformed verifier key: want <name>+<key ID>+<key>")
	}
	if len(raw) != 1+ed25519.PublicKeySize || raw[0] != 0x04 {
		return nil, errors.New("not a cosignature/v1 key (signature type 0x04, Ed25519)")
	}
	h := sha256.New()
	h.Write([]byte(name + "\n"))
	h.Write(raw)
	if want := fmt.Sprintf("%08x", h.Sum(nil)[:4]); id != want {
		return nil, fmt.Errorf("key ID %s does not match the key (want %s)", id, want)
	}
	return raw[1:], nil
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

// TesseraGroup is the policy as the Tessera witness group a LogDriver
// other than the POSIX one hands Tessera's checkpoint publisher
// (tessera.AppendOptions.WithWitnesses); every witness needs a URL.
func (p *WitnessPolicy) TesseraGroup() (tessera.WitnessGroup, error) { return p.tesseraGroup() }

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
