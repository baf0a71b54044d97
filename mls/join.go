package mls

import (
	"bytes"
	"crypto/hmac"
	"fmt"
	"slices"
)

// Joining a group (RFC 9420 §12.4.3): by Welcome, or by external commit
// from a published GroupInfo.

// welcomeKeyNonce derives the AEAD key and nonce that protect the
// GroupInfo in a Welcome from welcome_secret (§12.4.3.1).
func (s *CipherSuite) welcomeKeyNonce(welcomeSecret []byte) (key, nonce []byte) {
	return s.mustExpandWithLabel(welcomeSecret, "key", nil, s.nk),
		s.mustExpandWithLabel(welcomeSecret, "nonce", nil, s.nn)
}

// welcomeSecret is DeriveSecret(Extract(joiner_secret, psk_secret),
// "welcome") (§8): it needs no group context, so a joiner can decrypt the
// GroupInfo that carries the context.
func (s *CipherSuite) welcomeSecret(joinerSecret, pskSecret []byte) []byte {
	if len(pskSecret) == 0 {
		pskSecret = make([]byte, s.nh)
	}
	return s.DeriveSecret(s.Extract(joinerSecret, pskSecret), "welcome")
}

// signGroupInfo builds and signs the GroupInfo of g's current epoch
// (§12.4.3), with the ratchet tree if asked and always the external_pub
// that external joiners need.
func (g *Group) signGroupInfo(withTree bool) (*GroupInfo, error) {
	extPub, _, err := g.suite.ExternalKeyPair(g.secrets.ExternalSecret)
	if err != nil {
		return nil, err
	}
	var exts []Extension
	if withTree {
		rt, err := g.tree.export().Marshal()
		if err != nil {
			return nil, err
		}
		exts = append(exts, Extension{Type: ExtensionTypeRatchetTree, Data: rt})
	}
	exts = append(exts, Extension{Type: ExtensionTypeExternalPub, Data: marshalExternalPub(extPub)})
	gi := &GroupInfo{GroupInfoTBS: GroupInfoTBS{GroupContext: g.ctx, Extensions: exts,
		ConfirmationTag: g.confTag, Signer: g.priv.leaf}}
	tbs, err := gi.MarshalTBS()
	if err != nil {
		return nil, err
	}
	if gi.Signature, err = g.suite.SignWithLabel(g.sigPriv, "GroupInfoTBS", tbs); err != nil {
		return nil, err
	}
	return gi, nil
}

// GroupInfo returns a signed GroupInfo MLSMessage with the ratchet tree
// and external_pub, which lets a client join by external commit.
func (g *Group) GroupInfo() ([]byte, error) {
	if g.inactive {
		return nil, fmt.Errorf("group info: %w", ErrGroupInactive)
	}
	gi, err := g.signGroupInfo(true)
	if err != nil {
		return nil, fmt.Errorf("group info: %w", err)
	}
	return (&MLSMessage{Version: MLS10, WireFormat: WireFormatGroupInfo, GroupInfo: gi}).Marshal()
}

// welcome builds the Welcome for the members a commit added
// (§12.4.3.1): the GroupInfo under the welcome key, and per new member
// the joiner secret, the path secret of the lowest parent it shares with
// the committer, and the PSK list, encrypted to its init key.
func (g *Group) welcome(ws *EpochSecrets, ap *appliedProposals, pathSecrets map[uint32][]byte) ([]byte, error) {
	gi, err := g.signGroupInfo(!g.cfg.OmitRatchetTree)
	if err != nil {
		return nil, err
	}
	giData, err := gi.Marshal()
	if err != nil {
		return nil, err
	}
	key, nonce := g.suite.welcomeKeyNonce(ws.WelcomeSecret)
	w := &Welcome{CipherSuite: g.suite.ID}
	if w.EncryptedGroupInfo, err = g.suite.Seal(key, nonce, nil, giData); err != nil {
		return nil, err
	}
	for i, kp := range ap.addedKPs {
		gs := GroupSecrets{JoinerSecret: ws.JoinerSecret, PSKs: ap.psks}
		if ps, ok := pathSecrets[commonAncestor(2*ap.added[i], 2*g.priv.leaf)]; ok {
			gs.PathSecret = &PathSecret{PathSecret: ps}
		}
		plain, err := gs.Marshal()
		if err != nil {
			return nil, err
		}
		ref, err := kp.Ref()
		if err != nil {
			return nil, err
		}
		kem, ct, err := g.suite.EncryptWithLabel(kp.InitKey, "Welcome", w.EncryptedGroupInfo, plain)
		if err != nil {
			return nil, err
		}
		w.Secrets = append(w.Secrets, EncryptedGroupSecrets{NewMember: ref,
			EncryptedGroupSecrets: HPKECiphertext{KEMOutput: kem, Ciphertext: ct}})
	}
	zero(ws.JoinerSecret)
	zero(ws.WelcomeSecret)
	return (&MLSMessage{Version: MLS10, WireFormat: WireFormatWelcome, Welcome: w}).Marshal()
}

// openWelcome decrypts this key package's GroupSecrets and the GroupInfo
// of a Welcome (§12.4.3.1). psks resolves the PSKs the secrets name.
func (s *CipherSuite) openWelcome(w *Welcome, kp *KeyPackage, initPriv []byte, psks func([]PreSharedKeyID) ([]PSKInput, error)) (*GroupSecrets, *GroupInfo, []byte, error) {
	if w.CipherSuite != s.ID || kp.CipherSuite != s.ID {
		return nil, nil, nil, fmt.Errorf("welcome suite 0x%04x: %w", uint16(w.CipherSuite), ErrInvalidWelcome)
	}
	ref, err := kp.Ref()
	if err != nil {
		return nil, nil, nil, err
	}
	i := slices.IndexFunc(w.Secrets, func(e EncryptedGroupSecrets) bool { return bytes.Equal(e.NewMember, ref) })
	if i < 0 {
		return nil, nil, nil, ErrWelcomeNotForUs
	}
	ct := w.Secrets[i].EncryptedGroupSecrets
	plain, err := s.DecryptWithLabel(initPriv, "Welcome", w.EncryptedGroupInfo, ct.KEMOutput, ct.Ciphertext)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("group secrets: %w: %w", ErrInvalidWelcome, err)
	}
	var gs GroupSecrets
	if err := gs.Unmarshal(plain); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: %w", ErrInvalidWelcome, err)
	}
	if len(gs.JoinerSecret) != s.nh {
		return nil, nil, nil, fmt.Errorf("joiner secret of %d bytes: %w", len(gs.JoinerSecret), ErrInvalidWelcome)
	}
	inputs, err := psks(gs.PSKs)
	if err != nil {
		return nil, nil, nil, err
	}
	pskSecret, err := s.PSKSecret(inputs)
	if err != nil {
		return nil, nil, nil, err
	}
	key, nonce := s.welcomeKeyNonce(s.welcomeSecret(gs.JoinerSecret, pskSecret))
	giData, err := s.Open(key, nonce, nil, w.EncryptedGroupInfo)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("group info: %w: %w", ErrInvalidWelcome, err)
	}
	var gi GroupInfo
	if err := gi.Unmarshal(giData); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: %w", ErrInvalidWelcome, err)
	}
	if gi.GroupContext.CipherSuite != s.ID || gi.GroupContext.Version != MLS10 {
		return nil, nil, nil, fmt.Errorf("group info suite or version: %w", ErrInvalidWelcome)
	}
	return &gs, &gi, pskSecret, nil
}

// verifyGroupInfo checks a GroupInfo's signature under the signer's key.
func (s *CipherSuite) verifyGroupInfo(gi *GroupInfo, sigPub []byte) error {
	tbs, err := gi.MarshalTBS()
	if err != nil {
		return err
	}
	if err := s.VerifyWithLabel(sigPub, "GroupInfoTBS", tbs, gi.Signature); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidGroupInfo, err)
	}
	return nil
}

// groupInfoTree gets the tree of a GroupInfo from its ratchet_tree
// extension, or from the caller when it came out of band, and checks the
// GroupInfo signature and the whole tree (§12.4.3.1).
func (s *CipherSuite) groupInfoTree(gi *GroupInfo, oob RatchetTree, cfg *Config) (*ratchetTree, error) {
	if err := uniqueExtensions(gi.Extensions); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidGroupInfo, err)
	}
	rt := oob
	if data, ok := findExtension(gi.Extensions, ExtensionTypeRatchetTree); ok {
		if err := rt.Unmarshal(data); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidGroupInfo, err)
		}
	}
	if len(rt) == 0 {
		return nil, fmt.Errorf("no ratchet tree: %w", ErrInvalidGroupInfo)
	}
	// The array is truncated after its last non-blank leaf (§12.4.3.3),
	// so len(rt) = 2*(index of that leaf)+1: the width the sender made.
	if cfg.MaxLeaves != 0 && uint64(len(rt)+1)/2 > uint64(cfg.MaxLeaves) {
		return nil, fmt.Errorf("%w: a tree %d leaves wide, more than %d", ErrTreeTooWide, (len(rt)+1)/2, cfg.MaxLeaves)
	}
	t, err := newTreeFromNodes(rt)
	if err != nil {
		return nil, err
	}
	signer := t.leaf(gi.Signer)
	if signer == nil {
		return nil, fmt.Errorf("signer leaf %d: %w", gi.Signer, ErrInvalidGroupInfo)
	}
	if err := s.verifyGroupInfo(gi, signer.SignatureKey); err != nil {
		return nil, err
	}
	if err := t.verifyTree(s, gi.GroupContext.GroupID, gi.GroupContext.TreeHash); err != nil {
		return nil, err
	}
	for _, i := range t.members() {
		ln := t.leaf(i)
		if err := supportsCapabilities(&ln.Capabilities, gi.GroupContext.Extensions); err != nil {
			return nil, fmt.Errorf("leaf %d: %w", i, err)
		}
		if cfg.VerifyMember != nil {
			if err := cfg.VerifyMember(ln.Credential, ln.SignatureKey); err != nil {
				return nil, fmt.Errorf("leaf %d: %w: %w", i, ErrMemberRejected, err)
			}
		}
	}
	return t, nil
}

// Join processes a Welcome for one of this client's key packages
// (§12.4.3.1) and returns the group at the Welcome's epoch. tree is the
// ratchet tree if the Welcome does not carry one (nil otherwise).
func Join(welcome []byte, kp *KeyPackagePrivate, cfg *Config, tree RatchetTree) (*Group, error) {
	g, err := join(welcome, kp, cfg, tree)
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	return g, nil
}

func join(welcome []byte, kp *KeyPackagePrivate, cfg *Config, oob RatchetTree) (*Group, error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	var m MLSMessage
	if err := m.Unmarshal(welcome); err != nil {
		return nil, err
	}
	if m.WireFormat != WireFormatWelcome {
		return nil, ErrUnexpectedMessage
	}
	s, err := LookupCipherSuite(m.Welcome.CipherSuite)
	if err != nil {
		return nil, err
	}
	g := &Group{suite: s, cfg: c, sigPriv: kp.Identity.SignaturePriv}
	gs, gi, pskSecret, err := s.openWelcome(m.Welcome, &kp.KeyPackage, kp.InitPriv, g.joinerPSKs)
	if err != nil {
		return nil, err
	}
	t, err := s.groupInfoTree(gi, oob, &c)
	if err != nil {
		return nil, err
	}
	me, ok := t.findLeaf(kp.KeyPackage.LeafNode.EncryptionKey)
	if !ok || !bytes.Equal(t.leaf(me).SignatureKey, kp.KeyPackage.LeafNode.SignatureKey) {
		return nil, fmt.Errorf("our leaf is not in the tree: %w", ErrInvalidWelcome)
	}
	g.tree = t
	g.ctx = gi.GroupContext
	g.priv = &treePrivate{leaf: me, keys: map[uint32]hpkeKeyPair{2 * me: {pub: kp.KeyPackage.LeafNode.EncryptionKey, priv: kp.EncryptionPriv}}}
	if gs.PathSecret != nil {
		if _, err := g.priv.setPathSecret(s, t, commonAncestor(2*me, 2*gi.Signer), gs.PathSecret.PathSecret); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidWelcome, err)
		}
	}
	e, err := s.EpochFromJoiner(gs.JoinerSecret, pskSecret, &g.ctx)
	if err != nil {
		return nil, err
	}
	// The confirmation tag proves the committer derived this very epoch.
	if !hmac.Equal(s.ConfirmationTag(e.ConfirmationKey, g.ctx.ConfirmedTranscriptHash), gi.ConfirmationTag) {
		return nil, ErrConfirmationTag
	}
	g.confTag = gi.ConfirmationTag
	if g.interim, err = s.InterimTranscriptHash(g.ctx.ConfirmedTranscriptHash, gi.ConfirmationTag); err != nil {
		return nil, err
	}
	if err := g.installEpoch(e); err != nil {
		return nil, err
	}
	return g, nil
}

// joinerPSKs resolves a Welcome's PSKs: a joiner knows external PSKs only
// (it has no resumption secrets of this group).
func (g *Group) joinerPSKs(ids []PreSharedKeyID) ([]PSKInput, error) {
	out := make([]PSKInput, 0, len(ids))
	for _, id := range ids {
		psk, ok := g.cfg.ExternalPSKs[string(id.PSKID)]
		if id.PSKType != PSKTypeExternal || !ok {
			return nil, fmt.Errorf("psk %x: %w", id.PSKID, ErrUnknownPSK)
		}
		out = append(out, PSKInput{ID: id, PSK: psk})
	}
	return out, nil
}

// JoinExternal joins a group by external commit (§12.4.3.2) from a
// GroupInfo MLSMessage that carries external_pub (and the ratchet tree,
// unless tree is given). It returns the new member's group and the commit
// to send to the members. It is JoinExternalWith without a resync.
func JoinExternal(groupInfo []byte, id *Identity, cfg *Config, tree RatchetTree) (*Group, []byte, error) {
	return JoinExternalWith(groupInfo, id, cfg, &ExternalJoinOptions{Tree: tree})
}

// ExternalJoinOptions shapes an external commit.
type ExternalJoinOptions struct {
	// Tree is the ratchet tree when the GroupInfo carries none.
	Tree RatchetTree
	// GroupID, if set, is the group the caller means to join: a GroupInfo
	// of another group fails with ErrWrongGroup.
	GroupID []byte
	// Signer, if set, is the identity (credential) of the member whose
	// signature the GroupInfo must carry.
	Signer []byte
	// Resync makes the commit a resync (§12.4.3.2): a member that lost
	// its state rejoins, and the commit carries a Remove of its old leaf,
	// the one leaf whose credential has the joiner's identity. Without
	// such a leaf the join fails with ErrInvalidGroupInfo.
	Resync bool
}

// JoinExternalWith joins a group by external commit (§12.4.3.2): from
// the GroupInfo's external_pub it derives the init secret with HPKE
// (§8.3, "external init"), adds its own leaf through the commit's path,
// and, for a resync, removes its old leaf in the same commit. The
// GroupInfo's signature and tree are verified as for a Welcome
// (§12.4.3.1), Config.VerifyMember included. It returns the joiner's
// group, already in the new epoch, and the commit (a PublicMessage, as
// §12.4.3.2 requires) to send to the members.
func JoinExternalWith(groupInfo []byte, id *Identity, cfg *Config, opts *ExternalJoinOptions) (*Group, []byte, error) {
	var o ExternalJoinOptions
	if opts != nil {
		o = *opts
	}
	g, out, err := joinExternal(groupInfo, id, cfg, &o)
	if err != nil {
		return nil, nil, fmt.Errorf("external join: %w", err)
	}
	return g, out, nil
}

func joinExternal(groupInfo []byte, id *Identity, cfg *Config, o *ExternalJoinOptions) (*Group, []byte, error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	var m MLSMessage
	if err := m.Unmarshal(groupInfo); err != nil {
		return nil, nil, err
	}
	if m.WireFormat != WireFormatGroupInfo {
		return nil, nil, ErrUnexpectedMessage
	}
	gi := m.GroupInfo
	s, err := LookupCipherSuite(gi.GroupContext.CipherSuite)
	if err != nil {
		return nil, nil, err
	}
	if s.ID != id.Suite {
		return nil, nil, fmt.Errorf("identity suite 0x%04x: %w", uint16(id.Suite), ErrInvalidGroupInfo)
	}
	if o.GroupID != nil && !bytes.Equal(gi.GroupContext.GroupID, o.GroupID) {
		return nil, nil, fmt.Errorf("group info of group %x, not %x: %w", gi.GroupContext.GroupID, o.GroupID, ErrWrongGroup)
	}
	t, err := s.groupInfoTree(gi, o.Tree, &c)
	if err != nil {
		return nil, nil, err
	}
	if o.Signer != nil && !bytes.Equal(t.leaf(gi.Signer).Credential.Identity, o.Signer) {
		return nil, nil, fmt.Errorf("group info signed by leaf %d, not by %q: %w", gi.Signer, o.Signer, ErrInvalidGroupInfo)
	}
	props := []*Proposal{nil} // the ExternalInit, below
	if o.Resync {
		// §12.4.3.2: the Remove of a resync targets the joiner's old
		// self; members check that it has the joiner's identity.
		old := -1
		for _, i := range t.members() {
			if bytes.Equal(t.leaf(i).Credential.Identity, id.Credential.Identity) {
				if old >= 0 {
					return nil, nil, fmt.Errorf("two leaves with our identity: %w", ErrInvalidGroupInfo)
				}
				old = int(i)
			}
		}
		if old < 0 {
			return nil, nil, fmt.Errorf("resync: no leaf of ours in the tree: %w", ErrInvalidGroupInfo)
		}
		props = append(props, &Proposal{Type: ProposalTypeRemove, Remove: &Remove{Removed: uint32(old)}})
	}
	data, ok := findExtension(gi.Extensions, ExtensionTypeExternalPub)
	if !ok {
		return nil, nil, fmt.Errorf("no external_pub: %w", ErrInvalidGroupInfo)
	}
	extPub, err := unmarshalExternalPub(data)
	if err != nil {
		return nil, nil, err
	}
	kem, initSecret, err := s.externalInitSender(extPub)
	if err != nil {
		return nil, nil, err
	}
	g := &Group{suite: s, cfg: c, sigPriv: id.SignaturePriv, tree: t, ctx: gi.GroupContext,
		secrets: &EpochSecrets{}, priv: &treePrivate{keys: map[uint32]hpkeKeyPair{}}}
	if g.interim, err = s.InterimTranscriptHash(g.ctx.ConfirmedTranscriptHash, gi.ConfirmationTag); err != nil {
		return nil, nil, err
	}
	oldCtx := g.ctx
	oldCtx.Extensions = slices.Clone(g.ctx.Extensions)
	me := Sender{Type: SenderTypeNewMemberCommit}
	props[0] = &Proposal{Type: ProposalTypeExternalInit, ExternalInit: &ExternalInit{KEMOutput: kem}}
	var resolved []resolvedProposal
	var list []ProposalOrRef
	for _, p := range props {
		// §12.4.3.2: every proposal of an external commit is by value.
		resolved = append(resolved, resolvedProposal{p: p, sender: me})
		list = append(list, ProposalOrRef{Type: ProposalOrRefTypeProposal, Proposal: p})
	}
	encPub, encPriv, err := s.GenerateHPKEKeyPair()
	if err != nil {
		return nil, nil, err
	}
	leaf := &LeafNode{EncryptionKey: encPub, SignatureKey: id.SignaturePub, Credential: id.Credential,
		Capabilities: defaultCapabilities(s.ID), Source: LeafNodeSourceCommit}
	ap, err := g.applyProposals(resolved, me, leaf)
	if err != nil {
		return nil, nil, err
	}
	idx, err := t.addLeaf(leaf)
	if err != nil {
		return nil, nil, err
	}
	g.priv.leaf = idx
	up, pres, err := createUpdatePath(s, t, idx, leaf, id.SignaturePriv, g.ctx.GroupID, nil, g.provisional(), nil)
	if err != nil {
		return nil, nil, err
	}
	g.priv.keys[2*idx] = hpkeKeyPair{pub: encPub, priv: encPriv}
	for x, k := range pres.keys {
		g.priv.keys[x] = k
	}
	fc := &FramedContent{GroupID: g.ctx.GroupID, Epoch: g.ctx.Epoch, Sender: me, ContentType: ContentTypeCommit,
		Commit: &Commit{Proposals: list, Path: up}}
	ac, err := s.SignContent(WireFormatPublicMessage, fc, &oldCtx, id.SignaturePriv)
	if err != nil {
		return nil, nil, err
	}
	if _, err := g.finishCommit(ac, initSecret, pres.commitSecret, ap.psks, pres.ctx.TreeHash, false); err != nil {
		return nil, nil, err
	}
	pm, err := s.ProtectPublic(ac, &oldCtx, nil)
	if err != nil {
		return nil, nil, err
	}
	out, err := (&MLSMessage{Version: MLS10, WireFormat: WireFormatPublicMessage, PublicMessage: pm}).Marshal()
	if err != nil {
		return nil, nil, err
	}
	return g, out, nil
}
