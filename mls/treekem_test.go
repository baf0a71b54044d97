package mls

import (
	"bytes"
	"fmt"
	"testing"
)

type treeKEMCase struct {
	CipherSuite             uint16   `json:"cipher_suite"`
	GroupID                 hexBytes `json:"group_id"`
	Epoch                   uint64   `json:"epoch"`
	ConfirmedTranscriptHash hexBytes `json:"confirmed_transcript_hash"`
	RatchetTree             hexBytes `json:"ratchet_tree"`
	LeavesPrivate           []struct {
		Index          uint32   `json:"index"`
		EncryptionPriv hexBytes `json:"encryption_priv"`
		SignaturePriv  hexBytes `json:"signature_priv"`
		PathSecrets    []struct {
			Node       uint32   `json:"node"`
			PathSecret hexBytes `json:"path_secret"`
		} `json:"path_secrets"`
	} `json:"leaves_private"`
	UpdatePaths []struct {
		Sender        uint32     `json:"sender"`
		UpdatePath    hexBytes   `json:"update_path"`
		PathSecrets   []hexBytes `json:"path_secrets"`
		CommitSecret  hexBytes   `json:"commit_secret"`
		TreeHashAfter hexBytes   `json:"tree_hash_after"`
	} `json:"update_paths"`
}

// TestVectorTreeKEM processes every UpdatePath of the treekem vectors at
// every member with private state (§7.5, §12.4.2), comparing the
// decrypted path secret, commit secret and tree hash; then has each
// sender generate a fresh UpdatePath that all members must agree on.
func TestVectorTreeKEM(t *testing.T) {
	var cases []treeKEMCase
	loadVectors(t, "treekem.json", &cases)
	c := newTally("treekem.json")
	for i, tc := range cases {
		s := vectorSuite(t, c, tc.CipherSuite)
		if s == nil {
			continue
		}
		if err := checkTreeKEM(s, &tc); err != nil {
			c.fail(t, "case %d (suite %d): %v", i, tc.CipherSuite, err)
			continue
		}
		c.pass()
	}
	c.report(t)
}

func checkTreeKEM(s *CipherSuite, tc *treeKEMCase) error {
	tr, err := decodeTree(tc.RatchetTree)
	if err != nil {
		return err
	}
	if err := tr.verifyParentHashes(s); err != nil {
		return err
	}
	ctxFn := func(th []byte) (*GroupContext, error) {
		return &GroupContext{Version: MLS10, CipherSuite: s.ID, GroupID: tc.GroupID, Epoch: tc.Epoch,
			TreeHash: th, ConfirmedTranscriptHash: tc.ConfirmedTranscriptHash}, nil
	}
	privs := map[uint32]*treePrivate{}
	sigs := map[uint32][]byte{}
	for _, lp := range tc.LeavesPrivate {
		pub, err := s.HPKEPublicKey(lp.EncryptionPriv)
		if err != nil {
			return err
		}
		if tr.leaf(lp.Index) == nil || !bytes.Equal(pub, tr.leaf(lp.Index).EncryptionKey) {
			return fmt.Errorf("leaf %d: encryption key does not match", lp.Index)
		}
		p := &treePrivate{leaf: lp.Index, keys: map[uint32]hpkeKeyPair{2 * lp.Index: {pub: pub, priv: lp.EncryptionPriv}}}
		for _, ps := range lp.PathSecrets {
			kp, err := s.nodeKeyPair(ps.PathSecret)
			if err != nil {
				return err
			}
			if !bytes.Equal(kp.pub, tr.encryptionKey(ps.Node)) {
				return fmt.Errorf("leaf %d: path secret of node %d does not match", lp.Index, ps.Node)
			}
			p.keys[ps.Node] = kp
		}
		privs[lp.Index] = p
		sigs[lp.Index] = lp.SignaturePriv
	}
	for k, upc := range tc.UpdatePaths {
		var up UpdatePath
		if err := up.Unmarshal(upc.UpdatePath); err != nil {
			return err
		}
		for leaf, p := range privs {
			if leaf == upc.Sender {
				if len(upc.PathSecrets[leaf]) != 0 {
					return fmt.Errorf("path %d: sender has a path secret", k)
				}
				continue
			}
			after := tr.clone()
			res, err := applyUpdatePath(s, after, upc.Sender, &up, tc.GroupID, nil, p.clone(), ctxFn)
			if err != nil {
				return fmt.Errorf("path %d at leaf %d: %w", k, leaf, err)
			}
			if !bytes.Equal(res.lcaSecret, upc.PathSecrets[leaf]) {
				return fmt.Errorf("path %d at leaf %d: path secret", k, leaf)
			}
			if !bytes.Equal(res.commitSecret, upc.CommitSecret) {
				return fmt.Errorf("path %d at leaf %d: commit secret", k, leaf)
			}
			if !bytes.Equal(res.ctx.TreeHash, upc.TreeHashAfter) {
				return fmt.Errorf("path %d at leaf %d: tree hash after", k, leaf)
			}
			if err := after.verifyParentHashes(s); err != nil {
				return fmt.Errorf("path %d at leaf %d: %w", k, leaf, err)
			}
		}
		// A fresh path from the same sender must be processable by all.
		sender := tr.clone()
		leaf := *sender.leaf(upc.Sender)
		pub, _, err := s.GenerateHPKEKeyPair()
		if err != nil {
			return err
		}
		leaf.EncryptionKey = pub
		fresh, cres, err := createUpdatePath(s, sender, upc.Sender, &leaf, sigs[upc.Sender], tc.GroupID, nil, ctxFn, nil)
		if err != nil {
			return fmt.Errorf("create path %d: %w", k, err)
		}
		for l, p := range privs {
			if l == upc.Sender {
				continue
			}
			after := tr.clone()
			res, err := applyUpdatePath(s, after, upc.Sender, fresh, tc.GroupID, nil, p.clone(), ctxFn)
			if err != nil {
				return fmt.Errorf("fresh path %d at leaf %d: %w", k, l, err)
			}
			if !bytes.Equal(res.commitSecret, cres.commitSecret) || !bytes.Equal(res.ctx.TreeHash, cres.ctx.TreeHash) {
				return fmt.Errorf("fresh path %d at leaf %d: disagreement", k, l)
			}
		}
		if err := sender.verifyParentHashes(s); err != nil {
			return fmt.Errorf("fresh path %d: %w", k, err)
		}
	}
	return nil
}
