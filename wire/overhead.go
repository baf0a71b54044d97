package wire

import "github.com/quicprochat/qpc/padding"

// Record overheads: what a Send or Delivery record adds around the
// envelope it carries, before the record is padded to its bucket
// (docs/protocol.md §2, §4.3, §4.4). Every size that must agree with the
// encoders in codec.go is derived from these, so the server's limits, the
// client's chunk size and the plaintext buckets of package sealed follow
// the one layout.
const (
	// SendFixedSize is the part of a Send body around its auth and
	// envelope: send ID, message ID, auth length (u16), envelope length
	// (u24) (§4.3).
	SendFixedSize = IDSize + MessageIDSize + 2 + 3
	// MaxSendOverhead is what a Send record adds to its envelope with the
	// largest auth a server accepts: SendOverhead(MaxAuthSize).
	MaxSendOverhead = HeaderSize + SendFixedSize + MaxAuthSize
	// DeliveryFixedSize is the part of a Delivery body around its
	// envelope: seq, message ID, received-at, envelope length (u24)
	// (§4.4). It is smaller than a Send's.
	DeliveryFixedSize = 8 + MessageIDSize + 8 + 3
	// DeliveryOverhead is what a Delivery record adds to its envelope.
	DeliveryOverhead = HeaderSize + DeliveryFixedSize
)

// SendOverhead is what a Send record whose auth field is authLen bytes
// adds to its envelope before padding: the record header and the Send
// body's fixed fields and auth (§2, §4.3). A Send record carrying an
// envelope of n bytes fills the bucket of n + SendOverhead(authLen).
func SendOverhead(authLen int) int { return HeaderSize + SendFixedSize + authLen }

// MaxEnvelope is the reference max_envelope of a policy (§4.3): the
// largest envelope that a Send record with the largest auth still fits
// into the largest bucket of p. It is 0 or less when the largest bucket
// leaves no room.
func MaxEnvelope(p padding.Policy) int { return p.Max() - MaxSendOverhead }

// MaxDelivered is the largest envelope a Delivery record carries in the
// largest bucket of p (§4.4).
func MaxDelivered(p padding.Policy) int { return p.Max() - DeliveryOverhead }
