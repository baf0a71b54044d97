package client

import (
	"context"
	"encoding/hex"
	"errors"
	"slices"
	"time"

	"github.com/quicprochat/qpc/client/content"
	"github.com/quicprochat/qpc/client/state"
)

// The state of each conversation's MLS group as `qpc group` shows it
// (docs/user-guide.md): its epoch, its members, and when each member's
// leaf last changed as far as this client saw it (the time it processed a
// commit whose path replaced that member's leaf: the member's own commits
// and its resyncs; our own commits for us), kept in the conversation's
// record (memberRecord.LeafChanged, convRecord.MyLeafChanged). The rejoin
// bookkeeping (rejoin.go) is kept in a record of its own per
// conversation, next to the conversation's.

const bucketGroupExtra = "group-extra" // keyed by conversation ID

// groupExtra is the rejoin bookkeeping (rejoin.go) kept per conversation.
type groupExtra struct {
	// Asked is when we asked a member for a GroupInfo to rejoin; zero
	// when no answer is awaited.
	Asked time.Time `json:",omitempty"`
	// Answered is when we last answered each member's request.
	Answered map[string]time.Time `json:",omitempty"`
	// AnsweredEpoch is the epoch of our last answer to each member: a
	// request within rejoinAnswerEvery is answered again only from a
	// later epoch (a member whose resync lost asks again at once).
	AnsweredEpoch map[string]uint64 `json:",omitempty"`
	// Rejoined is the epoch our last resync made, until a member's
	// message of that epoch fails to decrypt (our resync lost to another
	// commit of its epoch, rejoin.go); Lost is then set, and an answer of
	// our own epoch is taken.
	Rejoined uint64 `json:",omitempty"`
	Lost     bool   `json:",omitempty"`
	// Behind is when a message of a later epoch than BehindEpoch, our
	// epoch then, first arrived (askRejoinIfBehind).
	Behind      time.Time `json:",omitempty"`
	BehindEpoch uint64    `json:",omitempty"`
	// RejoinedAt is when we last rejoined, Base the state (GroupInfo
	// context) we rejoined from; Suspect: no other member shared it past
	// the rejoin window, and we asked another (rejoinguard.go).
	RejoinedAt time.Time `json:",omitempty"`
	Base       []byte    `json:",omitempty"`
	Suspect    bool      `json:",omitempty"`
	// Distrusted names the members whose answer we rejoined from and
	// no other member shared (rejoinguard.go): never asked, nor
	// believed, again in this conversation.
	Distrusted []string `json:",omitempty"`
}

// groupExtra reads conv's record; a missing or unreadable one is empty
// (it holds nothing a conversation needs to work).
func (c *Client) groupExtra(tx *state.Tx, conv []byte) *groupExtra {
	x := &groupExtra{}
	if err := getJSON(tx, bucketGroupExtra, conv, x); err != nil && !errors.Is(err, state.ErrNoEntry) {
		c.log.Warn("group record unreadable, starting afresh", "err", err)
		return &groupExtra{}
	}
	return x
}

func (c *Client) putGroupExtra(tx *state.Tx, conv []byte, x *groupExtra) error {
	return putJSON(tx, bucketGroupExtra, conv, x)
}

// leafUpdated is when handle's leaf in r last changed as far as this
// client saw: when it was added, or we processed a commit of its (a
// member's commit carries a path) or its resync; zero if not seen.
func leafUpdated(r *convRecord, handle string, you bool) time.Time {
	if you {
		return r.MyLeafChanged
	}
	if m := r.Members[handle]; m != nil {
		return m.LeafChanged
	}
	return time.Time{}
}

// GroupView is a conversation's MLS group as `qpc group` shows it.
type GroupView struct {
	ID    string // hex conversation (MLS group) ID
	Name  string // the group name, or the peer's handle
	Group bool   // false for a direct chat
	// Creator made the conversation; in a group it is a label only (the
	// admins decide, docs/protocol.md §11.6). CreatorLeft: it is no
	// longer a member.
	Creator     string
	CreatorLeft bool     `json:",omitempty"`
	Admins      []string `json:",omitempty"` // groups: who may add, remove and set the admins
	Active      bool
	Epoch       uint64
	Members     []GroupMember // in leaf order, us included
}

// authority is who decides in r, whose state is g: the admins of a group
// in force (admins, commitorder.go; none for a direct chat) and whether
// the creator has left. The creator recorded when the conversation
// began (leaf 0 then) stays a label after it leaves; what `qpc group`
// showed as "created by" was taken for the group's authority long after
// it had gone.
func authority(r *convRecord, members map[string]bool) (list []string, creatorLeft bool) {
	if r.Kind != content.ConvGroup {
		return nil, false
	}
	return admins(r, r.Admins, members), !members[r.Creator]
}

// GroupMember is one member of a GroupView.
type GroupMember struct {
	Handle string
	Leaf   uint32
	You    bool
	// Updated is when this client last processed a change of the
	// member's leaf (its commit, or its rejoin); zero if not seen yet.
	Updated time.Time
	// Unchecked: key transparency has not yet shown this member's key
	// for its handle (we joined and it has written nothing since; ADR
	// 0041). Nothing it sends is shown until it checks out.
	Unchecked bool `json:",omitempty"`
}

// Groups describes the MLS state of every conversation (direct chats
// too), or of the group target names ("#name", a bare name, or a
// conversation ID), oldest first.
func (c *Client) Groups(ctx context.Context, target string) ([]GroupView, error) {
	c.op.Lock()
	defer c.op.Unlock()
	var convs []*convRecord
	if target != "" {
		r, err := c.findGroup(target)
		if err != nil {
			return nil, err
		}
		convs = []*convRecord{r}
	} else {
		var err error
		if convs, err = c.allConvs(); err != nil {
			return nil, err
		}
	}
	var out []GroupView
	err := c.store.View(func(tx *state.Tx) error {
		for _, r := range convs {
			v := GroupView{ID: hex.EncodeToString(r.ID), Name: r.display(), Group: r.Kind == content.ConvGroup, Creator: r.Creator, Active: r.Active && !r.Left}
			if g, err := c.loadGroup(ctx, r); err == nil {
				v.Epoch = g.Epoch()
				v.Admins, v.CreatorLeft = authority(r, memberSet(g))
				for _, m := range g.Members() {
					h := string(m.Credential.Identity)
					v.Members = append(v.Members, GroupMember{Handle: h, Leaf: m.Leaf, You: h == c.prof.Handle, Updated: leafUpdated(r, h, h == c.prof.Handle), Unchecked: r.Members[h] != nil && r.Members[h].Unverified})
				}
			} else {
				// A state a removal left cannot be loaded (our leaf is
				// gone): shown without members.
				v.Active = false
			}
			slices.SortFunc(v.Members, func(a, b GroupMember) int { return int(a.Leaf) - int(b.Leaf) })
			out = append(out, v)
		}
		return nil
	})
	return out, err
}
