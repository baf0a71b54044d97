package mls

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"fmt"
	"slices"
)

// Commits (RFC 9420 §12.4): resolving the proposal list, validating it
// (§12.2), applying it in the order of §12.3, the UpdatePath, and the
// transcript and key schedule of the new epoch. The committer and the
// receivers share every step except creating versus decrypting the path.

// resolvedProposal is a proposal with who proposed it.
type resolvedProposal struct {
	p      *Proposal
	sender Sender
	ref    []byte // nil when by value
}

// appliedProposals is what applying a proposal list produced.
type appliedProposals struct {
	added        []uint32
	addedKPs     []*KeyPackage
	psks         []PreSharedKeyID
	externalInit *ExternalInit
	reinit       *ReInit
	needsPath    bool
}

// resolveProposals turns Commit.proposals into proposals with senders,
// looking references up in this epoch's cache (§12.4).
func (g *Group) resolveProposals(list []ProposalOrRef, committer Sender) ([]resolvedProposal, error) {
	out := make([]resolvedProposal, 0, len(list))
	for _, por := range list {
		if por.Type == ProposalOrRefTypeProposal {
			out = append(out, resolvedProposal{p: por.Proposal, sender: committer})
			continue
		}
		if committer.Type == SenderTypeNewMemberCommit {
			// §12.4.3.2: an external joiner cannot have seen the epoch's
			// proposals, so its commit carries all of them by value.
			return nil, fmt.Errorf("proposal by reference in an external commit: %w", ErrInvalidCommit)
		}
		i := slices.IndexFunc(g.proposals, func(c cachedProposal) bool { return bytes.Equal(c.ref, por.Reference) })
		if i < 0 {
			return nil, fmt.Errorf("reference %x: %w", por.Reference, ErrUnknownProposal)
		}
		c := g.proposals[i]
		out = append(out, resolvedProposal{p: c.proposal, sender: c.sender, ref: c.ref})
	}
	return out, nil
}

// invalidProposals wraps ErrInvalidProposals; a %w in format keeps the
// underlying cause (e.g. ErrMemberRejected) reachable with errors.Is.
func invalidProposals(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidProposals}, args...)...)
}

// applyProposals validates the list against §12.2 and applies it to g's
// tree and context in the order of §12.3: GroupContextExtensions, Update,
// Remove, Add, then PSKs. g must be a working copy.
//
// joiner is the new leaf of an external commit's committer, whose old
// self a resync Remove may target; nil otherwise.
func (g *Group) applyProposals(props []resolvedProposal, committer Sender, joiner *LeafNode) (*appliedProposals, error) {
	ap := &appliedProposals{needsPath: len(props) == 0}
	byType := map[ProposalType][]resolvedProposal{}
	external := committer.Type == SenderTypeNewMemberCommit
	for _, rp := range props {
		t := rp.p.Type
		byType[t] = append(byType[t], rp)
		switch t {
		case ProposalTypeAdd, ProposalTypePSK, ProposalTypeReInit:
		default:
			// §12.4: anything that changes or removes a member's keys, or
			// the context, needs a fresh path to restore secrecy.
			ap.needsPath = true
		}
		if t == ProposalTypeExternalInit && (!external || rp.ref != nil) {
			return nil, invalidProposals("external_init outside an external commit")
		}
		if t == ProposalTypeUpdate && (rp.ref == nil || rp.sender.Type != SenderTypeMember) {
			// The committer refreshes its own leaf through the path, never
			// through an Update of its own (§12.2).
			return nil, invalidProposals("update by value or not from a member")
		}
		if rp.sender.Type == SenderTypeExternal && t == ProposalTypeUpdate {
			return nil, invalidProposals("update from an external sender")
		}
	}
	if external {
		// §12.4.3.2: exactly one ExternalInit, at most one Remove (of the
		// joiner's old self), PSKs; nothing else.
		if len(byType[ProposalTypeExternalInit]) != 1 || len(byType[ProposalTypeRemove]) > 1 {
			return nil, invalidProposals("external commit needs one external_init and at most one remove")
		}
		for t := range byType {
			if t != ProposalTypeExternalInit && t != ProposalTypeRemove && t != ProposalTypePSK {
				return nil, invalidProposals("%v in an external commit", t)
			}
		}
		ap.externalInit = byType[ProposalTypeExternalInit][0].p.ExternalInit
	}
	if len(byType[ProposalTypeReInit]) > 0 {
		if len(props) != 1 {
			return nil, invalidProposals("reinit with other proposals")
		}
		ap.reinit = byType[ProposalTypeReInit][0].p.ReInit
	}
	if gce := byType[ProposalTypeGroupContextExtensions]; len(gce) > 0 {
		if len(gce) > 1 {
			return nil, invalidProposals("two group_context_extensions")
		}
		exts := gce[0].p.GroupContextExtensions.Extensions
		if err := uniqueExtensions(exts); err != nil {
			return nil, invalidProposals("%w", err)
		}
		// Every member must support the new extensions (§12.1.7).
		for _, i := range g.tree.members() {
			if err := supportsCapabilities(&g.tree.leaf(i).Capabilities, exts); err != nil {
				return nil, invalidProposals("leaf %d: %w", i, err)
			}
		}
		g.ctx.Extensions = slices.Clone(exts)
	}
	touched := map[uint32]bool{}
	now := g.cfg.now()
	for _, rp := range byType[ProposalTypeUpdate] {
		leaf := rp.sender.Index
		if committer.Type == SenderTypeMember && leaf == committer.Index {
			return nil, invalidProposals("update from the committer")
		}
		if touched[leaf] {
			return nil, invalidProposals("two updates/removes of leaf %d", leaf)
		}
		touched[leaf] = true
		ln := &rp.p.Update.LeafNode
		// §12.1.2: the new leaf must not keep the sender's current
		// encryption key, or the update refreshes nothing.
		if old := g.tree.leaf(leaf); old != nil && bytes.Equal(old.EncryptionKey, ln.EncryptionKey) {
			return nil, invalidProposals("update of leaf %d keeps its encryption key", leaf)
		}
		if err := validateLeaf(ln, &leafCheck{suite: g.suite, groupID: g.ctx.GroupID, leaf: leaf, source: LeafNodeSourceUpdate,
			ctxExts: g.ctx.Extensions, tree: g.tree, verify: g.cfg.VerifyMember}); err != nil {
			return nil, invalidProposals("update of leaf %d: %w", leaf, err)
		}
		if err := g.tree.updateLeaf(leaf, ln); err != nil {
			return nil, invalidProposals("%w", err)
		}
		if leaf == g.priv.leaf {
			// Our own update was committed: bring in its parked key.
			k, ok := g.priv.keys[updateKeySlot(ln.EncryptionKey)]
			if !ok || !bytes.Equal(k.pub, ln.EncryptionKey) {
				return nil, invalidProposals("update of our leaf we did not propose")
			}
			g.priv.keys[2*leaf] = k
		}
	}
	for _, rp := range byType[ProposalTypeRemove] {
		leaf := rp.p.Remove.Removed
		if committer.Type == SenderTypeMember && leaf == committer.Index {
			return nil, invalidProposals("committer removes itself")
		}
		if touched[leaf] {
			return nil, invalidProposals("two updates/removes of leaf %d", leaf)
		}
		touched[leaf] = true
		if external && (g.tree.leaf(leaf) == nil || joiner == nil ||
			!bytes.Equal(g.tree.leaf(leaf).Credential.Identity, joiner.Credential.Identity)) {
			return nil, invalidProposals("external commit removes another member")
		}
		if err := g.tree.removeLeaf(leaf); err != nil {
			return nil, invalidProposals("remove: %w", err)
		}
	}
	for _, rp := range byType[ProposalTypeAdd] {
		kp := &rp.p.Add.KeyPackage
		if err := validateKeyPackage(kp, &leafCheck{suite: g.suite, groupID: g.ctx.GroupID, source: LeafNodeSourceKeyPackage,
			ctxExts: g.ctx.Extensions, tree: g.tree, now: now, verify: g.cfg.VerifyMember}); err != nil {
			// validateLeaf against the growing tree also rejects two Adds
			// of the same client and an Add of a current member (§12.2).
			return nil, invalidProposals("add: %w", err)
		}
		i, err := g.tree.addLeaf(&kp.LeafNode)
		if err != nil {
			return nil, invalidProposals("%w", err)
		}
		ap.added = append(ap.added, i)
		ap.addedKPs = append(ap.addedKPs, kp)
	}
	seen := map[string]bool{}
	for _, rp := range byType[ProposalTypePSK] {
		id := rp.p.PreSharedKey.PSK
		enc, err := id.Marshal()
		if err != nil {
			return nil, invalidProposals("%w", err)
		}
		k := string(enc) // §12.2: the same PreSharedKeyID, nonce included
		if seen[k] {
			return nil, invalidProposals("psk named twice")
		}
		seen[k] = true
		// §8.4: the nonce must be fresh randomness of the hash size.
		if len(id.PSKNonce) != g.suite.nh {
			return nil, invalidProposals("psk nonce of %d bytes", len(id.PSKNonce))
		}
		if id.PSKType == PSKTypeResumption && id.Usage != ResumptionPSKUsageApplication {
			return nil, invalidProposals("resumption psk with usage %d in a normal commit", id.Usage)
		}
		ap.psks = append(ap.psks, id)
	}
	return ap, nil
}

// pskInputs looks up the values of the PSKs (§8.4).
func (g *Group) pskInputs(ids []PreSharedKeyID) ([]PSKInput, error) {
	out := make([]PSKInput, 0, len(ids))
	for _, id := range ids {
		var v []byte
		switch id.PSKType {
		case PSKTypeExternal:
			psk, ok := g.cfg.ExternalPSKs[string(id.PSKID)]
			if !ok {
				return nil, fmt.Errorf("external psk %x: %w", id.PSKID, ErrUnknownPSK)
			}
			v = psk
		case PSKTypeResumption:
			if !bytes.Equal(id.PSKGroupID, g.ctx.GroupID) {
				return nil, fmt.Errorf("resumption psk of another group: %w", ErrUnknownPSK)
			}
			i := slices.IndexFunc(g.resumption, func(r resumptionPSK) bool { return r.epoch == id.PSKEpoch })
			if i < 0 {
				return nil, fmt.Errorf("resumption psk of epoch %d: %w", id.PSKEpoch, ErrUnknownPSK)
			}
			v = g.resumption[i].psk
		}
		out = append(out, PSKInput{ID: id, PSK: v})
	}
	return out, nil
}

// provisional returns the contextFunc for the next epoch (§12.4.1): the new
// epoch number, the tree hash given, the old confirmed transcript hash and
// the (possibly updated) extensions.
func (g *Group) provisional() contextFunc {
	return func(th []byte) (*GroupContext, error) {
		c := g.ctx
		c.Epoch++
		c.TreeHash = th
		return &c, nil
	}
}

// finishCommit moves g (a working copy already holding the new tree and
// extensions) to the next epoch (§8, §8.2): confirmed transcript hash over
// the signed commit, key schedule, confirmation tag — checked for a
// received commit in constant time, set for our own — and interim hash.
//
// treeHash is the new tree's hash if the path step already computed it.
func (g *Group) finishCommit(ac *AuthenticatedContent, initSecret, commitSecret []byte, psks []PreSharedKeyID, treeHash []byte, verifyTag bool) (*EpochSecrets, error) {
	inputs, err := g.pskInputs(psks)
	if err != nil {
		return nil, err
	}
	pskSecret, err := g.suite.PSKSecret(inputs)
	if err != nil {
		return nil, err
	}
	confirmed, err := g.suite.ConfirmedTranscriptHash(g.interim, ac)
	if err != nil {
		return nil, err
	}
	th := treeHash
	if th == nil {
		if th, err = g.tree.treeHash(g.suite); err != nil {
			return nil, err
		}
	}
	g.ctx.Epoch++
	g.ctx.TreeHash = th
	g.ctx.ConfirmedTranscriptHash = confirmed
	e, err := g.suite.DeriveEpoch(initSecret, commitSecret, pskSecret, &g.ctx)
	if err != nil {
		return nil, err
	}
	tag := g.suite.ConfirmationTag(e.ConfirmationKey, confirmed)
	if verifyTag {
		if !hmac.Equal(tag, ac.Auth.ConfirmationTag) {
			return nil, ErrConfirmationTag
		}
	} else {
		ac.Auth.ConfirmationTag = tag
	}
	g.confTag = tag
	if g.interim, err = g.suite.InterimTranscriptHash(confirmed, tag); err != nil {
		return nil, err
	}
	// Keep the joiner and welcome secrets for the Welcome; installEpoch
	// deletes them.
	welcome := &EpochSecrets{JoinerSecret: slices.Clone(e.JoinerSecret), WelcomeSecret: slices.Clone(e.WelcomeSecret)}
	if err := g.installEpoch(e); err != nil {
		return nil, err
	}
	return welcome, nil
}

// processCommit applies a received, authenticated commit to g, a working
// copy (§12.4.2). It reports whether this member was removed.
func (g *Group) processCommit(ac *AuthenticatedContent) (bool, error) {
	commit := ac.Content.Commit
	committer := ac.Content.Sender
	if committer.Type != SenderTypeMember && committer.Type != SenderTypeNewMemberCommit {
		return false, fmt.Errorf("commit from %v: %w", committer.Type, ErrInvalidCommit)
	}
	props, err := g.resolveProposals(commit.Proposals, committer)
	if err != nil {
		return false, err
	}
	oldInit := g.secrets.InitSecret
	var externalPriv []byte
	if committer.Type == SenderTypeNewMemberCommit {
		if _, externalPriv, err = g.suite.ExternalKeyPair(g.secrets.ExternalSecret); err != nil {
			return false, err
		}
	}
	var joiner *LeafNode
	if committer.Type == SenderTypeNewMemberCommit && commit.Path != nil {
		joiner = &commit.Path.LeafNode
	}
	ap, err := g.applyProposals(props, committer, joiner)
	if err != nil {
		return false, err
	}
	if ap.needsPath && commit.Path == nil {
		return false, fmt.Errorf("commit needs a path: %w", ErrInvalidCommit)
	}
	initSecret := oldInit
	if ap.externalInit != nil {
		if initSecret, err = g.suite.externalInitReceiver(externalPriv, ap.externalInit.KEMOutput); err != nil {
			return false, fmt.Errorf("external init: %w: %w", ErrInvalidCommit, err)
		}
	}
	removed := g.tree.leaf(g.priv.leaf) == nil || !bytes.Equal(g.tree.leaf(g.priv.leaf).SignatureKey, g.mySigKey())
	var commitSecret, treeHash []byte
	if commit.Path != nil {
		if err := checkPathKeys(g.tree, commit.Path); err != nil {
			return false, err
		}
		sender := committer.Index
		if committer.Type == SenderTypeNewMemberCommit {
			if sender, err = g.tree.addLeaf(&commit.Path.LeafNode); err != nil {
				return false, err
			}
		}
		if err := validateLeaf(&commit.Path.LeafNode, &leafCheck{suite: g.suite, groupID: g.ctx.GroupID, leaf: sender,
			source: LeafNodeSourceCommit, ctxExts: g.ctx.Extensions, tree: g.tree, verify: g.cfg.VerifyMember}); err != nil {
			return false, err
		}
		exclude := map[uint32]bool{}
		for _, i := range ap.added {
			exclude[i] = true
		}
		priv := g.priv
		if removed {
			priv = nil
		}
		res, err := applyUpdatePath(g.suite, g.tree, sender, commit.Path, g.ctx.GroupID, exclude, priv, g.provisional())
		if err != nil {
			return false, err
		}
		commitSecret, treeHash = res.commitSecret, res.ctx.TreeHash
		for x, k := range res.keys {
			g.priv.keys[x] = k
		}
	}
	if removed {
		// We cannot derive the new epoch (its secrets were not encrypted
		// to us); the group is over for this member.
		g.inactive = true
		return true, nil
	}
	if _, err := g.finishCommit(ac, initSecret, commitSecret, ap.psks, treeHash, true); err != nil {
		return false, err
	}
	if ap.reinit != nil {
		// §12.1.5: after a ReInit the old group may only be used to start
		// the new one.
		g.inactive = true
	}
	return false, nil
}

// checkPathKeys is two checks of §12.4.2 on an UpdatePath, made on the
// new ratchet tree (proposals applied, path not merged yet): the new
// LeafNode's encryption_key differs from the committer's current leaf's,
// and none of the path's public keys appears in any node of the tree. A
// key may not appear twice within the path either, which would leave two
// nodes of the merged tree sharing one key. A committer that broke them
// would keep a key it was meant to replace (no post-compromise security
// for that node) or make one node's secret open another's.
func checkPathKeys(t *ratchetTree, up *UpdatePath) error {
	keys := make(map[string]bool, len(up.Nodes)+1)
	for _, k := range append([][]byte{up.LeafNode.EncryptionKey}, pathNodeKeys(up)...) {
		if keys[string(k)] {
			return fmt.Errorf("a public key appears twice in the update path: %w", ErrInvalidPath)
		}
		keys[string(k)] = true
	}
	for x := range t.nodes {
		if k := t.encryptionKey(uint32(x)); k != nil && keys[string(k)] {
			return fmt.Errorf("update path reuses the public key of node %d: %w", x, ErrInvalidPath)
		}
	}
	return nil
}

func pathNodeKeys(up *UpdatePath) [][]byte {
	out := make([][]byte, len(up.Nodes))
	for i := range up.Nodes {
		out[i] = up.Nodes[i].EncryptionKey
	}
	return out
}

func (g *Group) mySigKey() []byte {
	pub, err := g.suite.SignaturePublicKey(g.sigPriv)
	if err != nil {
		return nil
	}
	return pub
}

// CommitOptions selects what a commit covers; the zero value commits all
// pending proposals with a fresh path (a self-update).
type CommitOptions struct {
	// Proposals are added by value after the pending ones.
	Proposals []*Proposal
	// SkipPending leaves the cached proposals out.
	SkipPending bool
	// tamperPath lets the package's tests break the path's key rules
	// (createUpdatePath).
	tamperPath func(leaf *LeafNode, pubs [][]byte)
	// NoPath omits the UpdatePath, allowed only when every proposal is an
	// Add, PreSharedKey or ReInit (§12.4). It is cheaper for large adds
	// but does not refresh the committer's keys.
	NoPath bool
	// AuthenticatedData is carried in the commit's FramedContent
	// (RFC 9420 §6): signed with it and, in a PrivateMessage, sent
	// beside the ciphertext. Applications put their own agreed records
	// there (qpc: the group's admin list, docs/protocol.md §11.6).
	AuthenticatedData []byte
}

// CommitResult is what a commit produced for the delivery service.
type CommitResult struct {
	// Commit is the MLSMessage to send to the current members.
	Commit []byte
	// Welcome is the MLSMessage for the added members, nil if none.
	Welcome []byte
}

// Commit creates a commit (§12.4.1), moves this member to the new epoch
// and returns the messages to send. Unless opts.NoPath, the commit
// carries a path, which refreshes this member's keys (post-compromise
// security) and is required anyway for updates, removes and extension
// changes.
func (g *Group) Commit(opts *CommitOptions) (*CommitResult, error) {
	if g.inactive {
		return nil, fmt.Errorf("commit: %w", ErrGroupInactive)
	}
	var o CommitOptions
	if opts != nil {
		o = *opts
	}
	next := g.clone()
	res, err := next.commit(g, &o)
	if err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	*g = *next
	return res, nil
}

func (g *Group) commit(old *Group, o *CommitOptions) (*CommitResult, error) {
	me := Sender{Type: SenderTypeMember, Index: g.priv.leaf}
	var list []ProposalOrRef
	var props []resolvedProposal
	var byValue []resolvedProposal
	for _, p := range o.Proposals {
		byValue = append(byValue, resolvedProposal{p: p, sender: me})
	}
	if !o.SkipPending {
		for _, c := range g.proposals {
			// Our own Update proposals cannot be committed by us (§12.2);
			// the path replaces them.
			if c.proposal.Type == ProposalTypeUpdate && c.sender == me {
				continue
			}
			cand := resolvedProposal{p: c.proposal, sender: c.sender, ref: c.ref}
			// A pending proposal that is invalid with what is already
			// chosen (and the caller's own proposals) is left out, never
			// allowed to fail the commit (§12.2): one member's Remove of
			// the committer, say, must not freeze the group.
			trial := g.clone()
			if _, err := trial.applyProposals(append(append(slices.Clone(props), cand), byValue...), me, nil); err != nil {
				continue
			}
			list = append(list, ProposalOrRef{Type: ProposalOrRefTypeReference, Reference: c.ref})
			props = append(props, cand)
		}
	}
	for _, rp := range byValue {
		list = append(list, ProposalOrRef{Type: ProposalOrRefTypeProposal, Proposal: rp.p})
	}
	props = append(props, byValue...)
	ap, err := g.applyProposals(props, me, nil)
	if err != nil {
		return nil, err
	}
	if g.tree.leaf(me.Index) == nil {
		return nil, fmt.Errorf("committer removed: %w", ErrInvalidProposals)
	}
	pres := &pathResult{}
	var up *UpdatePath
	if o.NoPath {
		if ap.needsPath {
			return nil, fmt.Errorf("these proposals need a path: %w", ErrInvalidCommit)
		}
	} else {
		leaf, leafPriv, err := old.freshLeaf(LeafNodeSourceCommit)
		if err != nil {
			return nil, err
		}
		exclude := map[uint32]bool{}
		for _, i := range ap.added {
			exclude[i] = true
		}
		if up, pres, err = createUpdatePath(g.suite, g.tree, me.Index, leaf, g.sigPriv, g.ctx.GroupID, exclude, g.provisional(), o.tamperPath); err != nil {
			return nil, err
		}
		g.priv.keys[2*me.Index] = hpkeKeyPair{pub: leaf.EncryptionKey, priv: leafPriv}
		for x, k := range pres.keys {
			g.priv.keys[x] = k
		}
	}
	fc := old.frame(ContentTypeCommit)
	fc.AuthenticatedData = slices.Clone(o.AuthenticatedData)
	fc.Commit = &Commit{Proposals: list, Path: up}
	var welcomeSecrets *EpochSecrets
	// Protect with the old epoch's keys but the working copy's secret
	// tree, so that a failure leaves the caller's ratchets untouched.
	sender := *old
	sender.secretTree = g.secretTree
	out, _, err := sender.protect(fc, old.cfg.PublicHandshake, func(ac *AuthenticatedContent) error {
		var err error
		welcomeSecrets, err = g.finishCommit(ac, old.secrets.InitSecret, pres.commitSecret, ap.psks, pres.treeHash(), false)
		return err
	})
	if err != nil {
		return nil, err
	}
	res := &CommitResult{Commit: out}
	// §12.1.5: after a ReInit only the new group may be used.
	g.inactive = ap.reinit != nil
	if len(ap.added) > 0 {
		if res.Welcome, err = g.welcome(welcomeSecrets, ap, pres.secrets); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// Add commits Add proposals for the key packages (plus pending proposals).
func (g *Group) Add(kps ...*KeyPackage) (*CommitResult, error) {
	o := &CommitOptions{}
	for _, kp := range kps {
		o.Proposals = append(o.Proposals, &Proposal{Type: ProposalTypeAdd, Add: &Add{KeyPackage: *kp}})
	}
	return g.Commit(o)
}

// Remove commits Remove proposals for the leaves (plus pending proposals).
func (g *Group) Remove(leaves ...uint32) (*CommitResult, error) {
	o := &CommitOptions{}
	for _, l := range leaves {
		o.Proposals = append(o.Proposals, &Proposal{Type: ProposalTypeRemove, Remove: &Remove{Removed: l}})
	}
	return g.Commit(o)
}

// Update commits a fresh path for this member (plus pending proposals):
// the way to heal after a suspected compromise (§12.4).
func (g *Group) Update() (*CommitResult, error) { return g.Commit(nil) }

// externalInitSender is the joiner side of §12.4.3.2: HPKE SetupBaseS to
// the group's external_pub and init_secret = context.export("MLS 1.0
// external init secret", Nh).
func (s *CipherSuite) externalInitSender(pub []byte) (kemOutput, initSecret []byte, err error) {
	pk, err := s.kemScheme().UnmarshalBinaryPublicKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("external pub: %w", ErrInvalidKey)
	}
	snd, err := s.hpke.NewSender(pk, nil)
	if err != nil {
		return nil, nil, err
	}
	enc, ctx, err := snd.Setup(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	return enc, ctx.Export([]byte("MLS 1.0 external init secret"), uint(s.nh)), nil
}

// externalInitReceiver is the member side: SetupBaseR with the external
// private key and the same export.
func (s *CipherSuite) externalInitReceiver(priv, kemOutput []byte) ([]byte, error) {
	sk, err := s.kemScheme().UnmarshalBinaryPrivateKey(priv)
	if err != nil {
		return nil, ErrInvalidKey
	}
	rcv, err := s.hpke.NewReceiver(sk, nil)
	if err != nil {
		return nil, ErrDecryptFailed
	}
	ctx, err := rcv.Setup(kemOutput)
	if err != nil {
		return nil, ErrDecryptFailed
	}
	return ctx.Export([]byte("MLS 1.0 external init secret"), uint(s.nh)), nil
}
