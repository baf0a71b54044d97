package protocol

import (
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/quicprochat/qpc/kt"
)

// KTPin is what a client pins for a server's key transparency: what
// `qpc-server kt-vkey` prints.
type KTPin struct {
	VKey       string
	VRFKey     []byte
	ConfigHash [32]byte
	// WitnessPolicy is the witness policy checkpoints must satisfy, in
	// the format of kt.ParseWitnessPolicy (canonical text); empty: none.
	WitnessPolicy string
}

// policyKeywords start the lines of a witness policy in a pin.
var policyKeywords = map[string]bool{"witness": true, "group": true, "quorum": true, "log": true}

// ParseKTPin reads the output of `qpc-server kt-vkey`: the note verifier
// key, "vrf-key <hex>" and "config <hex>", on lines or separated by
// spaces, then, for a server with witnesses, the witness policy, one
// directive a line (witness, group, quorum).
func ParseKTPin(s string) (KTPin, error) {
	var p KTPin
	var policy strings.Builder
	var f []string
	for line := range strings.Lines(s) {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		lf := strings.Fields(line)
		if len(lf) > 0 && policyKeywords[lf[0]] {
			policy.WriteString(strings.Join(lf, " ") + "\n")
			continue
		}
		f = append(f, lf...)
	}
	for i := 0; i < len(f); i++ {
		switch {
		case f[i] == "vrf-key" && i+1 < len(f):
			b, err := hex.DecodeString(f[i+1])
			if err != nil || len(b) == 0 {
				return p, fmt.Errorf("kt pin: bad vrf-key")
			}
			p.VRFKey = b
			i++
		case f[i] == "config" && i+1 < len(f):
			b, err := hex.DecodeString(f[i+1])
			if err != nil || len(b) != 32 {
				return p, fmt.Errorf("kt pin: bad config hash")
			}
			copy(p.ConfigHash[:], b)
			i++
		case p.VKey == "" && strings.Contains(f[i], "+"):
			p.VKey = f[i]
		default:
			return p, fmt.Errorf("kt pin: unexpected %q (give the lines `qpc-server kt-vkey` prints)", f[i])
		}
	}
	if p.VKey == "" || p.VRFKey == nil || p.ConfigHash == [32]byte{} {
		return p, fmt.Errorf("kt pin: incomplete (give the lines `qpc-server kt-vkey` prints)")
	}
	if policy.Len() > 0 {
		wp, err := kt.ParseWitnessPolicy(policy.String())
		if err != nil {
			return p, fmt.Errorf("kt pin: %w", err)
		}
		if wp.Required() {
			p.WitnessPolicy = wp.Text()
		}
	}
	if _, err := p.Verifier(); err != nil {
		return p, fmt.Errorf("kt pin: %w", err)
	}
	return p, nil
}

// String formats the pin as `qpc-server kt-vkey` does.
func (p KTPin) String() string {
	return fmt.Sprintf("%s\nvrf-key %x\nconfig %x\n%s", p.VKey, p.VRFKey, p.ConfigHash, p.WitnessPolicy)
}

// Verifier is a key-transparency verifier pinned to p, witness policy
// included.
func (p KTPin) Verifier() (*kt.Verifier, error) {
	return newKTVerifier(p.VKey, p.VRFKey, p.ConfigHash, p.WitnessPolicy)
}

// newKTVerifier pins a verifier to the log key, VRF key, configuration
// hash and witness policy (empty: none).
func newKTVerifier(vkey string, vrfKey []byte, cfg [32]byte, policy string) (*kt.Verifier, error) {
	v, err := kt.NewVerifier(vkey, vrfKey, cfg)
	if err != nil {
		return nil, err
	}
	if policy != "" {
		wp, err := kt.ParseWitnessPolicy(policy)
		if err != nil {
			return nil, err
		}
		v.SetWitnessPolicy(wp)
	}
	return v, nil
}
