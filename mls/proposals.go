package mls

import (
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// ProposalType identifies a proposal (RFC 9420 §12.1, §17.4).
//
// The IANA registry is extensible, and unknown values are legitimate inside
// Capabilities lists, which this code keeps as they are. A Proposal of an
// unknown type, however, has a body with no length prefix — its encoding is
// defined only by the extension that registers it — so it cannot be
// delimited and Proposal decoding rejects it as malformed. RFC 9420 §12.2
// also requires rejecting a commit that covers a proposal type the group
// does not support, so nothing acceptable is lost.
type ProposalType uint16

// Proposal types defined by RFC 9420 §12.1.
const (
	ProposalTypeAdd                    ProposalType = 1
	ProposalTypeUpdate                 ProposalType = 2
	ProposalTypeRemove                 ProposalType = 3
	ProposalTypePSK                    ProposalType = 4
	ProposalTypeReInit                 ProposalType = 5
	ProposalTypeExternalInit           ProposalType = 6
	ProposalTypeGroupContextExtensions ProposalType = 7
)

func (t ProposalType) String() string {
	switch t {
	case ProposalTypeAdd:
		return "add"
	case ProposalTypeUpdate:
		return "update"
	case ProposalTypeRemove:
		return "remove"
	case ProposalTypePSK:
		return "psk"
	case ProposalTypeReInit:
		return "reinit"
	case ProposalTypeExternalInit:
		return "external_init"
	case ProposalTypeGroupContextExtensions:
		return "group_context_extensions"
	}
	return fmt.Sprintf("ProposalType(%d)", uint16(t))
}

// Add proposes adding the holder of KeyPackage (RFC 9420 §12.1.1).
type Add struct {
	KeyPackage KeyPackage
}

// Marshal encodes the Add body.
func (a *Add) Marshal() ([]byte, error) { return encode("Add", a.marshal) }

// Unmarshal decodes an Add body; trailing bytes are an error.
func (a *Add) Unmarshal(data []byte) error { return decodeAll("Add", data, a.unmarshal) }

func (a *Add) marshal(b *cryptobyte.Builder)       { a.KeyPackage.marshal(b) }
func (a *Add) unmarshal(s *cryptobyte.String) bool { return a.KeyPackage.unmarshal(s) }

// Update proposes replacing the sender's leaf with LeafNode
// (RFC 9420 §12.1.2).
type Update struct {
	LeafNode LeafNode
}

// Marshal encodes the Update body.
func (u *Update) Marshal() ([]byte, error) { return encode("Update", u.marshal) }

// Unmarshal decodes an Update body; trailing bytes are an error.
func (u *Update) Unmarshal(data []byte) error { return decodeAll("Update", data, u.unmarshal) }

func (u *Update) marshal(b *cryptobyte.Builder)       { u.LeafNode.marshal(b) }
func (u *Update) unmarshal(s *cryptobyte.String) bool { return u.LeafNode.unmarshal(s) }

// Remove proposes removing the member at leaf index Removed
// (RFC 9420 §12.1.3).
type Remove struct {
	Removed uint32
}

// Marshal encodes the Remove body.
func (r *Remove) Marshal() ([]byte, error) { return encode("Remove", r.marshal) }

// Unmarshal decodes a Remove body; trailing bytes are an error.
func (r *Remove) Unmarshal(data []byte) error { return decodeAll("Remove", data, r.unmarshal) }

func (r *Remove) marshal(b *cryptobyte.Builder)       { b.AddUint32(r.Removed) }
func (r *Remove) unmarshal(s *cryptobyte.String) bool { return s.ReadUint32(&r.Removed) }

// PSKType says where a pre-shared key comes from (RFC 9420 §8.4). A closed
// enumeration without a registry: anything but 1..2 is malformed, and the
// two arms differ in shape so an unknown one cannot be skipped.
type PSKType uint8

// PSK types of RFC 9420 §8.4.
const (
	PSKTypeExternal   PSKType = 1
	PSKTypeResumption PSKType = 2
)

// ResumptionPSKUsage says why a resumption PSK is injected (RFC 9420 §8.4).
// A closed enumeration without a registry, so only 1..3 are accepted.
type ResumptionPSKUsage uint8

// Resumption PSK usages of RFC 9420 §8.4.
const (
	ResumptionPSKUsageApplication ResumptionPSKUsage = 1
	ResumptionPSKUsageReInit      ResumptionPSKUsage = 2
	ResumptionPSKUsageBranch      ResumptionPSKUsage = 3
)

// PreSharedKeyID names a PSK (RFC 9420 §8.4). For PSKTypeExternal only
// PSKID is encoded; for PSKTypeResumption, Usage, PSKGroupID and PSKEpoch.
// The fields of the other arm must be zero, because they would be lost.
type PreSharedKeyID struct {
	PSKType    PSKType
	PSKID      []byte             // external
	Usage      ResumptionPSKUsage // resumption
	PSKGroupID []byte             // resumption
	PSKEpoch   uint64             // resumption
	PSKNonce   []byte
}

// Marshal encodes the PSK ID; psk.go feeds it into PSKLabel (§8.4).
func (p *PreSharedKeyID) Marshal() ([]byte, error) { return encode("PreSharedKeyID", p.marshal) }

// Unmarshal decodes a PSK ID; trailing bytes are an error.
func (p *PreSharedKeyID) Unmarshal(data []byte) error {
	return decodeAll("PreSharedKeyID", data, p.unmarshal)
}

func (p *PreSharedKeyID) marshal(b *cryptobyte.Builder) {
	switch p.PSKType {
	case PSKTypeExternal:
		if p.Usage != 0 || len(p.PSKGroupID) != 0 || p.PSKEpoch != 0 {
			invalidf(b, "external PSK with resumption fields")
			return
		}
		b.AddUint8(uint8(p.PSKType))
		addOpaque(b, p.PSKID)
	case PSKTypeResumption:
		if p.Usage < ResumptionPSKUsageApplication || p.Usage > ResumptionPSKUsageBranch {
			invalidf(b, "resumption PSK usage %d", p.Usage)
			return
		}
		if len(p.PSKID) != 0 {
			invalidf(b, "resumption PSK with psk_id")
			return
		}
		b.AddUint8(uint8(p.PSKType))
		b.AddUint8(uint8(p.Usage))
		addOpaque(b, p.PSKGroupID)
		b.AddUint64(p.PSKEpoch)
	default:
		invalidf(b, "PSK type %d", p.PSKType)
		return
	}
	addOpaque(b, p.PSKNonce)
}

func (p *PreSharedKeyID) unmarshal(s *cryptobyte.String) bool {
	var t uint8
	if !s.ReadUint8(&t) {
		return false
	}
	*p = PreSharedKeyID{PSKType: PSKType(t)}
	switch p.PSKType {
	case PSKTypeExternal:
		if !readOpaque(s, &p.PSKID) {
			return false
		}
	case PSKTypeResumption:
		var u uint8
		if !s.ReadUint8(&u) {
			return false
		}
		p.Usage = ResumptionPSKUsage(u)
		if p.Usage < ResumptionPSKUsageApplication || p.Usage > ResumptionPSKUsageBranch ||
			!readOpaque(s, &p.PSKGroupID) || !s.ReadUint64(&p.PSKEpoch) {
			return false
		}
	default:
		return false
	}
	return readOpaque(s, &p.PSKNonce)
}

// PreSharedKey proposes injecting a PSK into the next epoch
// (RFC 9420 §12.1.4).
type PreSharedKey struct {
	PSK PreSharedKeyID
}

// Marshal encodes the PreSharedKey body.
func (p *PreSharedKey) Marshal() ([]byte, error) { return encode("PreSharedKey", p.marshal) }

// Unmarshal decodes a PreSharedKey body; trailing bytes are an error.
func (p *PreSharedKey) Unmarshal(data []byte) error {
	return decodeAll("PreSharedKey", data, p.unmarshal)
}

func (p *PreSharedKey) marshal(b *cryptobyte.Builder)       { p.PSK.marshal(b) }
func (p *PreSharedKey) unmarshal(s *cryptobyte.String) bool { return p.PSK.unmarshal(s) }

// ReInit proposes closing the group and restarting it with new parameters
// (RFC 9420 §12.1.5). Version is kept as sent: a ReInit may legitimately
// name a future protocol version.
type ReInit struct {
	GroupID     []byte
	Version     ProtocolVersion
	CipherSuite CipherSuiteID
	Extensions  []Extension
}

// Marshal encodes the ReInit body.
func (r *ReInit) Marshal() ([]byte, error) { return encode("ReInit", r.marshal) }

// Unmarshal decodes a ReInit body; trailing bytes are an error.
func (r *ReInit) Unmarshal(data []byte) error { return decodeAll("ReInit", data, r.unmarshal) }

func (r *ReInit) marshal(b *cryptobyte.Builder) {
	addOpaque(b, r.GroupID)
	b.AddUint16(uint16(r.Version))
	b.AddUint16(uint16(r.CipherSuite))
	marshalExtensions(b, r.Extensions)
}

func (r *ReInit) unmarshal(s *cryptobyte.String) bool {
	var v, cs uint16
	if !readOpaque(s, &r.GroupID) || !s.ReadUint16(&v) || !s.ReadUint16(&cs) ||
		!unmarshalExtensions(s, &r.Extensions) {
		return false
	}
	r.Version, r.CipherSuite = ProtocolVersion(v), CipherSuiteID(cs)
	return true
}

// ExternalInit carries the KEM output an external joiner used to derive the
// new init secret (RFC 9420 §12.1.6).
type ExternalInit struct {
	KEMOutput []byte
}

// Marshal encodes the ExternalInit body.
func (e *ExternalInit) Marshal() ([]byte, error) { return encode("ExternalInit", e.marshal) }

// Unmarshal decodes an ExternalInit body; trailing bytes are an error.
func (e *ExternalInit) Unmarshal(data []byte) error {
	return decodeAll("ExternalInit", data, e.unmarshal)
}

func (e *ExternalInit) marshal(b *cryptobyte.Builder)       { addOpaque(b, e.KEMOutput) }
func (e *ExternalInit) unmarshal(s *cryptobyte.String) bool { return readOpaque(s, &e.KEMOutput) }

// GroupContextExtensions proposes replacing the group context extensions
// (RFC 9420 §12.1.7).
type GroupContextExtensions struct {
	Extensions []Extension
}

// Marshal encodes the GroupContextExtensions body.
func (g *GroupContextExtensions) Marshal() ([]byte, error) {
	return encode("GroupContextExtensions", g.marshal)
}

// Unmarshal decodes a GroupContextExtensions body; trailing bytes are an
// error.
func (g *GroupContextExtensions) Unmarshal(data []byte) error {
	return decodeAll("GroupContextExtensions", data, g.unmarshal)
}

func (g *GroupContextExtensions) marshal(b *cryptobyte.Builder) { marshalExtensions(b, g.Extensions) }
func (g *GroupContextExtensions) unmarshal(s *cryptobyte.String) bool {
	return unmarshalExtensions(s, &g.Extensions)
}

// Proposal is a proposal_type followed by the matching body
// (RFC 9420 §12.1). Exactly the body selected by Type must be set.
type Proposal struct {
	Type                   ProposalType
	Add                    *Add
	Update                 *Update
	Remove                 *Remove
	PreSharedKey           *PreSharedKey
	ReInit                 *ReInit
	ExternalInit           *ExternalInit
	GroupContextExtensions *GroupContextExtensions
}

// Marshal encodes the proposal.
func (p *Proposal) Marshal() ([]byte, error) { return encode("Proposal", p.marshal) }

// Unmarshal decodes a proposal; trailing bytes are an error.
func (p *Proposal) Unmarshal(data []byte) error { return decodeAll("Proposal", data, p.unmarshal) }

// body returns the marshaler for the body selected by Type and whether the
// other bodies are all unset.
func (p *Proposal) body() (func(*cryptobyte.Builder), bool) {
	set := 0
	var f func(*cryptobyte.Builder)
	if p.Add != nil {
		set++
		if p.Type == ProposalTypeAdd {
			f = p.Add.marshal
		}
	}
	if p.Update != nil {
		set++
		if p.Type == ProposalTypeUpdate {
			f = p.Update.marshal
		}
	}
	if p.Remove != nil {
		set++
		if p.Type == ProposalTypeRemove {
			f = p.Remove.marshal
		}
	}
	if p.PreSharedKey != nil {
		set++
		if p.Type == ProposalTypePSK {
			f = p.PreSharedKey.marshal
		}
	}
	if p.ReInit != nil {
		set++
		if p.Type == ProposalTypeReInit {
			f = p.ReInit.marshal
		}
	}
	if p.ExternalInit != nil {
		set++
		if p.Type == ProposalTypeExternalInit {
			f = p.ExternalInit.marshal
		}
	}
	if p.GroupContextExtensions != nil {
		set++
		if p.Type == ProposalTypeGroupContextExtensions {
			f = p.GroupContextExtensions.marshal
		}
	}
	return f, set == 1
}

func (p *Proposal) marshal(b *cryptobyte.Builder) {
	f, ok := p.body()
	if f == nil || !ok {
		invalidf(b, "proposal %v needs exactly its own body", p.Type)
		return
	}
	b.AddUint16(uint16(p.Type))
	f(b)
}

func (p *Proposal) unmarshal(s *cryptobyte.String) bool {
	var t uint16
	if !s.ReadUint16(&t) {
		return false
	}
	*p = Proposal{Type: ProposalType(t)}
	switch p.Type {
	case ProposalTypeAdd:
		p.Add = new(Add)
		return p.Add.unmarshal(s)
	case ProposalTypeUpdate:
		p.Update = new(Update)
		return p.Update.unmarshal(s)
	case ProposalTypeRemove:
		p.Remove = new(Remove)
		return p.Remove.unmarshal(s)
	case ProposalTypePSK:
		p.PreSharedKey = new(PreSharedKey)
		return p.PreSharedKey.unmarshal(s)
	case ProposalTypeReInit:
		p.ReInit = new(ReInit)
		return p.ReInit.unmarshal(s)
	case ProposalTypeExternalInit:
		p.ExternalInit = new(ExternalInit)
		return p.ExternalInit.unmarshal(s)
	case ProposalTypeGroupContextExtensions:
		p.GroupContextExtensions = new(GroupContextExtensions)
		return p.GroupContextExtensions.unmarshal(s)
	}
	// Unknown or reserved: the body is undelimited (see ProposalType).
	return false
}

// ProposalOrRefType selects between an inline proposal and a reference in a
// Commit (RFC 9420 §12.4). A closed enumeration: only 1..2 are valid.
type ProposalOrRefType uint8

// ProposalOrRef types of RFC 9420 §12.4.
const (
	ProposalOrRefTypeProposal  ProposalOrRefType = 1
	ProposalOrRefTypeReference ProposalOrRefType = 2
)

// ProposalOrRef is one entry of Commit.proposals (RFC 9420 §12.4): a
// proposal by value, or a ProposalRef (a HashReference, §5.2) to one sent
// earlier in the epoch.
type ProposalOrRef struct {
	Type      ProposalOrRefType
	Proposal  *Proposal // Type == proposal
	Reference []byte    // Type == reference
}

// Marshal encodes the entry.
func (p *ProposalOrRef) Marshal() ([]byte, error) { return encode("ProposalOrRef", p.marshal) }

// Unmarshal decodes an entry; trailing bytes are an error.
func (p *ProposalOrRef) Unmarshal(data []byte) error {
	return decodeAll("ProposalOrRef", data, p.unmarshal)
}

func (p *ProposalOrRef) marshal(b *cryptobyte.Builder) {
	switch p.Type {
	case ProposalOrRefTypeProposal:
		if p.Proposal == nil || len(p.Reference) != 0 {
			invalidf(b, "inline proposal needs exactly a proposal")
			return
		}
		b.AddUint8(uint8(p.Type))
		p.Proposal.marshal(b)
	case ProposalOrRefTypeReference:
		if p.Proposal != nil {
			invalidf(b, "proposal reference with inline proposal")
			return
		}
		b.AddUint8(uint8(p.Type))
		addOpaque(b, p.Reference)
	default:
		invalidf(b, "ProposalOrRef type %d", p.Type)
	}
}

func (p *ProposalOrRef) unmarshal(s *cryptobyte.String) bool {
	var t uint8
	if !s.ReadUint8(&t) {
		return false
	}
	*p = ProposalOrRef{Type: ProposalOrRefType(t)}
	switch p.Type {
	case ProposalOrRefTypeProposal:
		p.Proposal = new(Proposal)
		return p.Proposal.unmarshal(s)
	case ProposalOrRefTypeReference:
		return readOpaque(s, &p.Reference)
	}
	return false
}
