package client

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/quicprochat/qpc/client/content"
	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/mls"
	"github.com/quicprochat/qpc/sealed"
)

// Commit order and group policy (docs/protocol.md §11.6,
// docs/adr/0015-commit-order.md). Any member may commit; every member
// applies the commits of a conversation in one order without a shared
// mailbox, by a fork choice each computes alone:
//
//   - Of the commits made on one epoch e, the one of lowest rank wins.
//     A commit's rank is one byte, 0 for a commit that removes a member,
//     1 for a member's resync of its own leaf and 2 for any other, then HMAC-SHA-256(k_e, committer's leaf), then
//     SHA-256 of the commit message, where k_e is MLS-Exporter("qpc
//     commit order", "", 32) of epoch e (RFC 9420 §8.5): every member of
//     e computes the same rank, the server cannot, and a committer cannot
//     grind its commit to win (the HMAC is fixed by the epoch and its
//     leaf; the hash only breaks a tie between two commits of one
//     member, which an honest client never makes). A removal wins over
//     any other commit, so a member being removed cannot undo its
//     removal with a commit of its own on the same epoch.
//   - A member applies the first valid commit it reads and keeps the
//     states of the last maxChain epochs (Chain). A commit on one of
//     those epochs that ranks below the one the member followed out of
//     it makes the member switch: it goes back to that epoch's state,
//     applies the better commit, and drops the epochs after it.
//   - A commit of ours that lost (or was dropped with a branch) is
//     retried on the new epoch unless what it was for is done already;
//     the messages we sent in the dropped epochs are sent again, with
//     their IDs and sequence numbers, in the winner's; receivers drop
//     the copies they already read (trackSeq).
//   - A message that does not decrypt with an epoch we hold may be of a
//     branch we will switch to: it is deferred (deferred.go), not dropped.

// maxChain is how many past epochs a fork choice may return to.
const maxChain = 4

// maxResend is how many of our messages of one epoch are kept to be sent
// again if the epoch is dropped by a fork choice; older ones are not.
const maxResend = 256

// commitOrderLabel is the exporter label of the fork choice's key.
const commitOrderLabel = "qpc commit order"

// errDeferOtherBranch: a member's message that no epoch state we hold
// decrypts: it may be of a branch of commits we have not switched to yet.
var errDeferOtherBranch = fmt.Errorf("%w (or of another branch of commits)", errDeferFutureEpoch)

// errStaleBranch: a member's message that can only be of a branch of
// commits we dropped; it is dropped without an alarm.
var errStaleBranch = errors.New("of a branch of commits dropped by the fork choice")

// errRefused: an envelope refused with an alarm of its own (a commit
// against the group's policy); no second alarm says it was dropped.
var errRefused = errors.New("refused")

// Kinds of commit intent.
const (
	intentUpdate = "update"
	intentAdd    = "add"
	intentRemove = "remove"
	intentAdmins = "admins"
)

// commitIntent is what one of our commits was for: retried, if the
// commit loses, on the epoch that won.
type commitIntent struct {
	Kind   string
	Handle string   `json:",omitempty"` // added or removed
	Admins []string `json:",omitempty"` // the admin list set
}

// epochLink is a past epoch kept for the fork choice: its state, the
// rank of the commit we followed out of it, and what we sent in it.
type epochLink struct {
	Epoch uint64
	// State is mls.Group.Marshal of the epoch, stored apart from the
	// record under Slot (convstore.go) and read when needed
	// (Client.linkState); LegacyState held it in the record before.
	State       []byte `json:"-"`
	Slot        uint64 `json:",omitempty"`
	LegacyState []byte `json:"State,omitempty"`
	Until       time.Time
	// OutRank is the rank of the commit we followed out of Epoch; Mine
	// is set when that commit is ours.
	OutRank []byte
	Mine    *commitIntent `json:",omitempty"`
	// SentFrom and SentTo number the content messages (plaintexts) we
	// sent in Epoch, stored apart (convstore.go); LegacySent held them
	// in the record before.
	SentFrom, SentTo uint64   `json:",omitempty"`
	LegacySent       [][]byte `json:"Sent,omitempty"`
	// Admins is the admin list in force in Epoch.
	Admins []string `json:",omitempty"`
	// Out is the commit (its MLSMessage, ours or its committer's) we
	// followed out of Epoch, echoed to a member on another branch
	// (echo.go). Like State it is stored apart under Slot
	// (convstore.go, read with Client.linkOut); HasOut says there is
	// one. EchoedTo names the members it was echoed to, each at most
	// once.
	Out       []byte `json:"-"`
	HasOut    bool   `json:",omitempty"`
	LegacyOut []byte `json:"Out,omitempty"` // in the record before it was kept apart

	EchoedTo []string `json:",omitempty"`
}

func orderKey(g *mls.Group) ([]byte, error) {
	return g.ExportSecret(commitOrderLabel, nil, 32)
}

// Classes of the fork choice's rank, lowest first: a removal wins over a
// member's resync of its own leaf (rejoin.go), which wins over any other
// commit. A resync ranking with removals let a member being removed undo
// its removal with a resync on the same epoch
// (TestHostileMemberResyncOutracesRemoval).
const (
	classRemove = 0
	classResync = 1
	classOther  = 2
)

// commitRank is the fork choice's rank of commit, sent by leaf in the
// epoch whose order key is key (removes: it removes a member): lower
// wins.
func commitRank(key []byte, leaf uint32, commit []byte, removes bool) []byte {
	if removes {
		return rankOf(classRemove, key, leaf, commit)
	}
	return rankOf(classOther, key, leaf, commit)
}

// resyncRank is the rank of a member's resync of its leaf leaf.
func resyncRank(key []byte, leaf uint32, commit []byte) []byte {
	return rankOf(classResync, key, leaf, commit)
}

func rankOf(class byte, key []byte, leaf uint32, commit []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(binary.BigEndian.AppendUint32(nil, leaf))
	h := sha256.Sum256(commit)
	return append(append([]byte{class}, m.Sum(nil)...), h[:]...)
}

// sameCommitter reports whether two ranks of one epoch are of commits of
// one member.
func sameCommitter(a, b []byte) bool {
	return len(a) > 33 && len(b) > 33 && bytes.Equal(a[1:33], b[1:33])
}

// linkAt returns the index of the kept link of epoch, or -1.
func (r *convRecord) linkAt(epoch uint64, now time.Time) int {
	for i, l := range r.Chain {
		if l.Epoch == epoch && now.Before(l.Until) {
			return i
		}
	}
	return -1
}

// pushLink records that we left the current epoch (state pre, of epoch)
// by the commit out, of rank rank (ours when mine is set).
func (c *Client) pushLink(r *convRecord, epoch uint64, pre []byte, rank []byte, mine *commitIntent, out []byte) {
	now := c.opts.Now()
	l := &epochLink{Epoch: epoch, Until: now.Add(prevEpochKeep), OutRank: rank, Mine: mine, SentFrom: r.SentFrom, SentTo: r.SentTo, Admins: r.Admins}
	r.setLinkState(l, pre) // written once, as the epoch is left
	r.setLinkOut(l, out)
	r.Chain = append(r.Chain, l)
	r.SentFrom = r.SentTo
	r.Chain = slices.DeleteFunc(r.Chain, func(l *epochLink) bool {
		if !now.Before(l.Until) {
			r.dropLink(l)
			return true
		}
		return false
	})
	if len(r.Chain) > maxChain {
		for _, l := range r.Chain[:len(r.Chain)-maxChain] {
			r.dropLink(l)
		}
		r.Chain = slices.Clone(r.Chain[len(r.Chain)-maxChain:])
	}
	syncPrev(r)
}

// syncPrev keeps PrevEpoch and PrevUntil (the epoch before the current
// one, which readmitted reads) equal to the newest link's; its state is
// the link's, not stored twice.
func syncPrev(r *convRecord) {
	r.Prev = nil
	if len(r.Chain) == 0 {
		r.PrevUntil = time.Time{}
		return
	}
	l := r.Chain[len(r.Chain)-1]
	r.PrevEpoch, r.PrevUntil = l.Epoch, l.Until
}

// upgradeChain turns the previous epoch's state of a record from before
// the fork choice into its one link: messages of that epoch are read
// with it, and no commit for it wins over the one applied (its rank is
// unknown, so it sorts last).
func upgradeChain(r *convRecord) {
	if len(r.Chain) == 0 && r.Prev != nil {
		r.Chain = []*epochLink{{Epoch: r.PrevEpoch, LegacyState: r.Prev, Until: r.PrevUntil, OutRank: []byte{0}, Admins: r.Admins}}
	}
	r.Prev = nil
}

// admins is the policy's admin list in force with members (the
// handles of the group's members): the stored list (the creator's alone
// for a record from before admins existed) less those no longer members;
// when none is left, every member is an admin, so that no group is
// frozen because the devices of its admins are gone (docs/protocol.md
// §11.6).
func admins(r *convRecord, list []string, members map[string]bool) []string {
	if list == nil {
		list = []string{r.Creator}
	}
	var out []string
	for _, h := range list {
		if members[h] {
			out = append(out, h)
		}
	}
	if len(out) == 0 {
		for h := range members {
			out = append(out, h)
		}
	}
	slices.Sort(out)
	return out
}

// policyRecord is the authenticated data of a commit that sets the
// group's admin list (docs/protocol.md §11.6).
type policyRecord struct {
	Admins []string `json:"admins"`
}

const policyPrefix = "qpc-policy/1 "

func marshalPolicy(p *policyRecord) []byte {
	b, _ := json.Marshal(p)
	return append([]byte(policyPrefix), b...)
}

func parsePolicy(aad []byte) (*policyRecord, error) {
	if !bytes.HasPrefix(aad, []byte(policyPrefix)) {
		return nil, fmt.Errorf("authenticated data that is not a policy record")
	}
	var p policyRecord
	if err := json.Unmarshal(aad[len(policyPrefix):], &p); err != nil || len(p.Admins) == 0 || len(p.Admins) > MaxGroupMembers {
		return nil, fmt.Errorf("a malformed policy record")
	}
	return &p, nil
}

// judgeCommit checks a commit of sender against the policy in force on
// its epoch (list, the admin list there): it changed the members from
// before to after and carried aad. Adding and removing members, and
// setting the admins, are for admins only; a direct chat changes
// neither. It returns the admin list after the commit.
func judgeCommit(r *convRecord, list []string, before, after map[string]bool, sender string, aad []byte) ([]string, error) {
	changed := !maps2Equal(before, after)
	isAdmin := slices.Contains(admins(r, list, before), sender)
	if r.Kind == content.ConvDirect && (changed || len(aad) > 0) {
		return nil, fmt.Errorf("%s changed a direct chat's members or policy", sender)
	}
	if changed && !isAdmin {
		return nil, fmt.Errorf("%s, not an admin, changed the members", sender)
	}
	next := list
	if len(aad) > 0 {
		p, err := parsePolicy(aad)
		if err != nil {
			return nil, err
		}
		if !isAdmin {
			return nil, fmt.Errorf("%s, not an admin, set the admins", sender)
		}
		for _, h := range p.Admins {
			if !after[h] {
				return nil, fmt.Errorf("%s made %s, not a member, an admin", sender, h)
			}
		}
		next = dedupe(p.Admins)
	}
	if next == nil {
		return nil, nil // the creator's alone, as before
	}
	return admins(r, next, after), nil
}

func maps2Equal(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// commitIn is the one way this client commits (adds, removes, updates of
// its own leaf, admin changes): it checks the policy, commits in by
// value with a path (refreshing our leaf), records the epoch left for the
// fork choice, and returns the commit and the members to send it to (the
// members before the commit, a removed one included). r.Members is not
// changed; the caller queues the commit (and a Welcome) and stores r.
// kps are the KeyPackages an add needs.
func (c *Client) commitIn(r *convRecord, g *mls.Group, in *commitIntent, kps []*mls.KeyPackage) (*mls.CommitResult, []string, error) {
	before := memberSet(g)
	me := c.prof.Handle
	isAdmin := slices.Contains(admins(r, r.Admins, before), me)
	var added, removed []string
	var remove []uint32
	o := &mls.CommitOptions{}
	newAdmins := r.Admins
	switch in.Kind {
	case intentUpdate:
	case intentAdd:
		added = []string{in.Handle}
	case intentRemove:
		removed = []string{in.Handle}
		for _, m := range g.Members() {
			if string(m.Credential.Identity) == in.Handle {
				remove = append(remove, m.Leaf)
			}
		}
	case intentAdmins:
		for _, h := range in.Admins {
			if !before[h] {
				return nil, nil, fmt.Errorf("%s is not a member of %s", h, r.display())
			}
		}
		o.AuthenticatedData = marshalPolicy(&policyRecord{Admins: dedupe(in.Admins)})
		newAdmins = dedupe(in.Admins)
	default:
		return nil, nil, fmt.Errorf("a commit for %q", in.Kind)
	}
	if in.Kind != intentUpdate && !isAdmin {
		return nil, nil, fmt.Errorf("%w: only %v may change %s", ErrNotAdmin, admins(r, r.Admins, before), r.display())
	}
	if r.Kind == content.ConvDirect && in.Kind != intentUpdate {
		return nil, nil, fmt.Errorf("a direct chat's members do not change")
	}
	if err := c.saveGroup(r, g); err != nil {
		return nil, nil, err
	}
	pre, epoch := r.Group, g.Epoch()
	key, err := orderKey(g)
	if err != nil {
		return nil, nil, err
	}
	res, err := commitExactly(g, kps, remove, added, removed, o)
	if err != nil {
		return nil, nil, err
	}
	c.pushLink(r, epoch, pre, commitRank(key, g.LeafIndex(), res.Commit, len(removed) > 0), in, res.Commit)
	if newAdmins != nil {
		r.Admins = admins(r, newAdmins, memberSet(g))
	}
	now := c.opts.Now()
	r.LastUpdate, r.RecvSinceUpdate, r.MyLeafChanged = now, 0, now
	if err := c.saveGroup(r, g); err != nil {
		return nil, nil, err
	}
	var to []string
	for h := range before {
		if h != me {
			to = append(to, h)
		}
	}
	slices.Sort(to)
	return res, to, nil
}

// ErrNotAdmin: the group's policy lets only its admins change it.
var ErrNotAdmin = errors.New("not an admin of the group")

// switchBranch moves r to the branch of commits that won on the epoch of
// link i: next is that epoch's state with the winning commit (out)
// applied, rank its rank. The epochs after link i are dropped; it returns
// the messages we sent in them (to send again) and the intents of our
// commits that were dropped (to retry).
func (c *Client) switchBranch(r *convRecord, i int, next *mls.Group, rank, out []byte) (resend [][]byte, retry []*commitIntent, err error) {
	l := r.Chain[i]
	if l.Mine != nil {
		retry = append(retry, l.Mine)
	}
	for _, d := range r.Chain[i+1:] {
		sent, err := c.sentIn(r, d.SentFrom, d.SentTo)
		if err != nil {
			return nil, nil, err
		}
		resend = append(resend, sent...)
		if d.Mine != nil {
			retry = append(retry, d.Mine)
		}
		r.dropLink(d)
	}
	sent, err := c.sentIn(r, r.SentFrom, r.SentTo)
	if err != nil {
		return nil, nil, err
	}
	resend = append(resend, sent...)
	r.dropSent(r.SentFrom, r.SentTo)
	r.SentFrom = r.SentTo
	r.Chain = r.Chain[:i+1]
	l.OutRank, l.Mine, l.EchoedTo = rank, nil, nil
	r.setLinkOut(l, out)
	r.Admins = l.Admins
	syncPrev(r)
	if err := c.saveGroup(r, next); err != nil {
		return nil, nil, err
	}
	return resend, retry, nil
}

// afterSwitch sends again, in g (the winner's epoch), what we sent in
// the dropped epochs, and retries the commits of ours that were dropped
// unless what they were for is done; it returns the effects to run in the
// processing transaction.
func (c *Client) afterSwitch(ctx context.Context, r *convRecord, g *mls.Group, resend [][]byte, retry []*commitIntent) ([]func(tx *state.Tx) error, error) {
	var out []func(tx *state.Tx) error
	for _, plain := range resend {
		if !g.Active() {
			break
		}
		m, err := content.ParseMessage(plain)
		if err != nil {
			continue
		}
		ct, err := g.Encrypt(plain)
		if err != nil {
			return nil, err
		}
		r.noteSent(plain)
		to := sortedKeys(r.Members)
		kind := m.Kind
		out = append(out, func(tx *state.Tx) error { return c.fanOutAs(tx, r, to, sealed.ContentMLS, ct, kind) })
	}
	seen := map[string]bool{}
	for _, in := range retry {
		if !g.Active() {
			break
		}
		members := memberSet(g)
		switch in.Kind {
		case intentUpdate:
			if seen[intentUpdate] {
				continue // one update heals as much as two
			}
		case intentAdd:
			if members[in.Handle] {
				continue
			}
		case intentRemove:
			if !members[in.Handle] {
				continue
			}
		case intentAdmins:
			if slices.Equal(admins(r, r.Admins, members), admins(r, in.Admins, members)) {
				continue
			}
		}
		seen[in.Kind] = true
		f, err := c.retryCommit(ctx, r, g, in)
		if err != nil {
			c.log.Debug("retrying a commit that lost", "err", err)
			continue
		}
		out = append(out, f)
	}
	return out, nil
}

// retryCommit makes the commit in again on g's epoch.
func (c *Client) retryCommit(ctx context.Context, r *convRecord, g *mls.Group, in *commitIntent) (func(tx *state.Tx) error, error) {
	var kps []*mls.KeyPackage
	var ct *Contact
	if in.Kind == intentAdd {
		var err error
		if ct, err = c.ensureContact(ctx, in.Handle, 10*time.Minute); err != nil {
			return nil, err
		}
		kp, err := c.contactKeyPackage(ctx, ct)
		if err != nil {
			return nil, err
		}
		kps = append(kps, kp)
	}
	res, to, err := c.commitIn(r, g, in, kps)
	if err != nil {
		return nil, err
	}
	var intro []byte
	if in.Kind == intentAdd {
		if intro, err = c.intro(r, res.Welcome); err != nil {
			return nil, err
		}
		r.Members[in.Handle] = &memberRecord{}
	}
	if in.Kind == intentRemove {
		delete(r.Members, in.Handle)
	}
	return func(tx *state.Tx) error {
		if err := c.fanOut(tx, r, to, sealed.ContentMLS, res.Commit); err != nil {
			return err
		}
		if intro != nil {
			return c.enqueueContent(tx, &outboxEntry{Conv: r.ID, To: ct.Handle, Intro: true, SendID: ct.IntroSendID, Sealing: ct.IntroKey, Type: sealed.ContentMLSWelcome, Payload: intro})
		}
		return nil
	}, nil
}

// commitFailure reports whether err is a commit that decrypted and is
// invalid (not one of another branch's epoch).
func commitFailure(err error) bool {
	for _, s := range []error{mls.ErrInvalidCommit, mls.ErrConfirmationTag, mls.ErrInvalidProposals, mls.ErrUnknownProposal, mls.ErrUnknownPSK, mls.ErrMemberRejected} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// SetAdmins makes handles, each a member, the admins of a group the user
// is an admin of (docs/protocol.md §11.6): the role is handed on (list
// yourself to keep it). Every member checks that the commit carrying it
// comes from an admin.
func (c *Client) SetAdmins(ctx context.Context, group string, handles []string) error {
	c.op.Lock()
	defer c.op.Unlock()
	r, g, err := c.ownGroup(ctx, group)
	if err != nil {
		return err
	}
	if len(handles) == 0 {
		return fmt.Errorf("a group needs at least one admin")
	}
	res, to, err := c.commitIn(r, g, &commitIntent{Kind: intentAdmins, Admins: dedupe(handles)}, nil)
	if err != nil {
		return err
	}
	err = c.store.Update(func(tx *state.Tx) error {
		if err := c.fanOut(tx, r, to, sealed.ContentMLS, res.Commit); err != nil {
			return err
		}
		c.history(tx, r, Event{Kind: EventAdmins, From: c.prof.Handle, Text: fmt.Sprintf("the admins are now %v", r.Admins)})
		return putConv(tx, r)
	})
	if err != nil {
		return err
	}
	return c.flush(ctx)
}

// Admins returns the admins of a group.
func (c *Client) Admins(ctx context.Context, group string) ([]string, error) {
	c.op.Lock()
	defer c.op.Unlock()
	r, g, err := c.ownGroup(ctx, group)
	if err != nil {
		return nil, err
	}
	return admins(r, r.Admins, memberSet(g)), nil
}

// EpochAuthenticator returns a conversation's epoch and its epoch
// authenticator (RFC 9420 §8.7): members that share the epoch show the
// same value.
func (c *Client) EpochAuthenticator(ctx context.Context, target string) (uint64, []byte, error) {
	c.op.Lock()
	defer c.op.Unlock()
	r, err := c.resolve(target)
	if err != nil {
		return 0, nil, err
	}
	g, err := c.loadGroup(ctx, r)
	if err != nil {
		return 0, nil, err
	}
	return g.Epoch(), g.EpochAuthenticator(), nil
}
