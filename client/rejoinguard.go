package client

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/mls"
)

// A forged GroupInfo (docs/protocol.md §11.8, TestHostileMemberForgedGroupInfo).
// A rejoining member takes the group's state from the one member it asked.
// A hostile member can answer from a branch of its own: a GroupInfo of the
// group's ID, signed by itself, every leaf a real member, of an epoch
// later than the group's (it applied commits it sent no one). The
// rejoiner then stands alone on that branch: what the others write is of
// an epoch before its own, of which it holds no state, and is dropped as
// a dropped branch's message would be, for good.
//
// So after a rejoin the rejoiner remembers who answered
// (convRecord.RejoinedFrom) until a message of another member decrypts
// in its epoch, which shows that it stands where that member does. If
// instead, past the rejoin window (ClientOptions.RejoinAfter) from the
// rejoin, a message of another member arrives that it cannot place (of
// an epoch it holds no state of), it asks that member for the group's
// state, once per rejoin. An answer that shows the rejoiner's own state,
// or the one it rejoined from (the answerer had not read its resync yet),
// confirms the rejoin; any other makes it rejoin again from the answer,
// whatever its epoch: the branch it stands on is the answerer's word
// against the first one's, and the first one's is shared by nobody who
// writes.

// suspectRejoin notes that a member's message of an epoch we hold no
// state of arrived from from: if we rejoined from another member's
// answer more than the rejoin window ago and no other member has shown
// us our epoch since, we ask from for the group's state, once.
func (c *Client) suspectRejoin(r *convRecord, from string) {
	if r.RejoinedFrom == "" || from == r.RejoinedFrom {
		return
	}
	now := c.opts.Now()
	ask := false
	err := c.store.Update(func(tx *state.Tx) error {
		x := c.groupExtra(tx, r.ID)
		if x.Suspect || now.Sub(x.RejoinedAt) < c.rejoinAfter() {
			return nil
		}
		x.Suspect, x.Asked, ask = true, time.Time{}, true
		return c.putGroupExtra(tx, r.ID, x)
	})
	if err != nil {
		c.log.Warn("could not note a doubtful rejoin", "conv", r.display(), "err", err)
		return
	}
	if ask {
		c.log.Info("no other member shares the state we rejoined from", "conv", r.display(), "answered by", r.RejoinedFrom, "asking", from)
		c.askRejoin(r, from)
	}
}

// checkSuspectAnswer decides on an answer from from to a request made by
// suspectRejoin (x.Suspect): it reports whether to rejoin from info, a
// GroupInfo MLSMessage; g is our current state. The member that gave the
// first answer is not asked and not believed again.
func checkSuspectAnswer(r *convRecord, x *groupExtra, g *mls.Group, from string, info []byte) (bool, error) {
	if from == r.RejoinedFrom {
		return false, fmt.Errorf("a group state from %s, whose last answer no other member shares", from)
	}
	if r.RejoinedFrom == "" {
		return false, nil // another member has shown us our epoch meanwhile
	}
	theirs, err := groupInfoContext(info)
	if err != nil {
		return false, err
	}
	raw, err := g.GroupInfo()
	if err != nil {
		return false, err
	}
	ours, err := groupInfoContext(raw)
	if err != nil {
		return false, err
	}
	if bytes.Equal(theirs, ours) || bytes.Equal(theirs, x.Base) {
		r.RejoinedFrom = "" // confirmed: the answerer stands where we do, or where we rejoined from
		return false, nil
	}
	return true, nil
}

// groupInfoContext is what names a group's state in a GroupInfo
// MLSMessage: its epoch, tree hash and confirmed transcript hash (RFC
// 9420 §8.1), which two members share only if they stand in the same
// epoch of the same branch.
func groupInfoContext(info []byte) ([]byte, error) {
	var msg mls.MLSMessage
	if err := msg.Unmarshal(info); err != nil || msg.GroupInfo == nil {
		return nil, fmt.Errorf("a group state that is not a GroupInfo")
	}
	gc := &msg.GroupInfo.GroupContext
	out := binary.BigEndian.AppendUint64(nil, gc.Epoch)
	out = append(append(out, gc.TreeHash...), gc.ConfirmedTranscriptHash...)
	return out, nil
}

// answeredAhead reports whether the state we rejoined from (x.Base) was
// of an epoch not before info's, another member's answer that shows
// another state: the first answerer stood at or ahead of a group nobody
// else follows it in, on a branch of its own, and is distrusted for good
// (TestHostileMemberForgedGroupInfoAgain). One whose answer a later
// commit, or another member's resync, outran is not
// (TestRejoinTwoAtOnce).
func answeredAhead(x *groupExtra, info []byte) bool {
	theirs, err := groupInfoContext(info)
	if err != nil || len(x.Base) < 8 || len(theirs) < 8 {
		return false
	}
	return binary.BigEndian.Uint64(x.Base) >= binary.BigEndian.Uint64(theirs)
}
