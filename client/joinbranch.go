package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/quicprochat/qpc/sealed"
)

// A member added by a commit that lost the fork choice (docs/protocol.md
// §11.6) joined from a Welcome of a branch nobody stays on: its adder
// makes the add again on the winning epoch, and the second Welcome, of a
// later epoch, replaces the conversation (a re-add, §11.5). Meanwhile
// what the joiner sent on its branch reaches members who never applied
// its add (it cannot be read there) and members the winning branch
// removed (they can no longer load the group): both are dropped without
// an alarm, as messages of a dropped branch are
// (TestConcurrentCommitJoinerOnLosingBranch).

// errAfterRemoval: a message in a conversation we were removed from (one
// its sender wrote before it read our removal, or a joiner of a branch
// that kept us): dropped without an alarm.
var errAfterRemoval = errors.New("a message in a conversation we were removed from")

// undecryptableFromNonMember decides on a member's-looking message that
// does not decrypt with our epoch and whose sealed sender is not a
// member of our branch: a sender key transparency shows, who knew our
// conversation mailbox, is a member of a branch we do not follow (a
// joiner whose add lost): its message is of a dropped branch. Anyone
// else raises the sender alarm.
func (c *Client) undecryptableFromNonMember(ctx context.Context, r *convRecord, op *sealed.Opened, err error) error {
	if _, cerr := c.senderContact(ctx, op); cerr != nil {
		return cerr
	}
	return fmt.Errorf("%w: from %s, not a member of the branch we follow in %s: %v", errStaleBranch, op.Sender.Handle, r.display(), err)
}
