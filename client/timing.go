package client

import "time"

// Timing parts: what Options.Timing is told of, one call per part
// per message. docs/benchmarks.md ("Direct message end to end") breaks a
// direct message's latency down by them.
const (
	// Sending (SendText).
	TimeSendLock   = "send.lock"   // the operation lock taken and the conversation found
	TimeSendPrep   = "send.prep"   // a text sent early: from its encryption to its Send request (tokens taken, outbox read, envelope sealed)
	TimeSendMLS    = "send.mls"    // group state loaded, content encrypted, state marshalled
	TimeSendQueue  = "send.queue"  // the transaction that records the outbox entries, history and conversation
	TimeSendTokens = "send.tokens" // tokens assigned to outbox entries (wallet and transaction)
	TimeSendSeal   = "send.seal"   // one entry's token read and its envelope sealed
	TimeSendWire   = "send.wire"   // one Send request until the server's acknowledgement
	TimeSendDone   = "send.done"   // the transaction that deletes the sent entries
	TimeSendFlush  = "send.flush"  // the whole outbox pass (tokens, seal, wire, done included)

	// Receiving (Follow).
	TimeRecvWait   = "recv.wait"   // from the envelope's arrival on the subscription to its processing
	TimeRecvOpen   = "recv.open"   // sealed.Open
	TimeRecvMLS    = "recv.mls"    // group state loaded, message processed, state marshalled
	TimeRecvSender = "recv.sender" // the sealed sender checked against the contact (key transparency)
	TimeRecvGossip = "recv.gossip" // the gossiped checkpoint compared
	TimeRecvCommit = "recv.commit" // the transaction that records the message, history and seen mark
	TimeRecvAck    = "recv.ack"    // the Ack request and the acked mark
	TimeRecvFlush  = "recv.flush"  // the outbox pass after a delivery
	TimeRecvShown  = "recv.shown"  // from the arrival to the event handed to Follow's callback

	// Key transparency (the join benchmark, docs/benchmarks.md).
	TimeKTLookup  = "kt.lookup"  // one lookup on a connection of its own (lookupLabel), verified
	TimeKTMembers = "kt.members" // a join's lookups of every member at once (KTMembersAtJoin)
)

// timed tells Options.Timing that part took since start.
func (c *Client) timed(part string, start time.Time) {
	if f := c.opts.Timing; f != nil {
		f(part, time.Since(start))
	}
}
