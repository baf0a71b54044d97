package mls

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
)

func decodeTree(data []byte) (*ratchetTree, error) {
	var rt RatchetTree
	if err := rt.Unmarshal(data); err != nil {
		return nil, err
	}
	return newTreeFromNodes(rt)
}

type treeValidationCase struct {
	CipherSuite uint16     `json:"cipher_suite"`
	Tree        hexBytes   `json:"tree"`
	GroupID     hexBytes   `json:"group_id"`
	Resolutions [][]uint32 `json:"resolutions"`
	TreeHashes  []hexBytes `json:"tree_hashes"`
}

// TestVectorTreeValidation checks tree hashes of every node (§7.8),
// resolutions (§4.1), parent-hash validity (§7.9.2) and leaf signatures
// (§7.2) on the tree-validation vectors.
func TestVectorTreeValidation(t *testing.T) {
	var cases []treeValidationCase
	loadVectors(t, "tree-validation.json", &cases)
	c := newTally("tree-validation.json")
	for i, tc := range cases {
		s := vectorSuite(t, c, tc.CipherSuite)
		if s == nil {
			continue
		}
		if err := checkTreeValidation(s, &tc); err != nil {
			c.fail(t, "case %d (suite %d): %v", i, tc.CipherSuite, err)
			continue
		}
		c.pass()
	}
	c.report(t)
}

func checkTreeValidation(s *CipherSuite, tc *treeValidationCase) error {
	tr, err := decodeTree(tc.Tree)
	if err != nil {
		return err
	}
	if len(tc.TreeHashes) != len(tr.nodes) || len(tc.Resolutions) != len(tr.nodes) {
		return fmt.Errorf("vector has %d hashes, %d resolutions for %d nodes", len(tc.TreeHashes), len(tc.Resolutions), len(tr.nodes))
	}
	hashes, err := tr.treeHashes(s, treeRoot(tr.numLeaves()), nil)
	if err != nil {
		return err
	}
	for x := range tr.nodes {
		if !bytes.Equal(hashes[x], tc.TreeHashes[x]) {
			return fmt.Errorf("tree hash of node %d", x)
		}
		if got := tr.resolution(uint32(x), nil); !slices.Equal(got, tc.Resolutions[x]) && !(len(got) == 0 && len(tc.Resolutions[x]) == 0) {
			return fmt.Errorf("resolution of node %d: got %v want %v", x, got, tc.Resolutions[x])
		}
	}
	if err := tr.verifyParentHashes(s); err != nil {
		return err
	}
	if err := tr.verifyStructure(); err != nil {
		return err
	}
	for _, l := range tr.members() {
		if err := verifyLeafSignature(s, tr.leaf(l), tc.GroupID, l); err != nil {
			return err
		}
	}
	// Negative check: flipping a parent hash bit must break validity, so
	// the verifier above is not vacuous.
	for x := 1; x < len(tr.nodes); x += 2 {
		if p := tr.parent(uint32(x)); p != nil && len(p.ParentHash) > 0 {
			bad := tr.clone()
			np := *p
			np.ParentHash = slices.Clone(p.ParentHash)
			np.ParentHash[0] ^= 1
			bad.setParent(uint32(x), &np)
			if bad.verifyParentHashes(s) == nil {
				return fmt.Errorf("corrupted parent hash at node %d accepted", x)
			}
			break
		}
	}
	return nil
}

type treeOperationsCase struct {
	CipherSuite    uint16   `json:"cipher_suite"`
	TreeBefore     hexBytes `json:"tree_before"`
	Proposal       hexBytes `json:"proposal"`
	ProposalSender uint32   `json:"proposal_sender"`
	TreeHashBefore hexBytes `json:"tree_hash_before"`
	TreeAfter      hexBytes `json:"tree_after"`
	TreeHashAfter  hexBytes `json:"tree_hash_after"`
}

// TestVectorTreeOperations applies Add, Update and Remove proposals to a
// tree (§12.1.1–§12.1.3) and compares the resulting tree and hash.
func TestVectorTreeOperations(t *testing.T) {
	var cases []treeOperationsCase
	loadVectors(t, "tree-operations.json", &cases)
	c := newTally("tree-operations.json")
	for i, tc := range cases {
		s := vectorSuite(t, c, tc.CipherSuite)
		if s == nil {
			continue
		}
		if err := checkTreeOperation(s, &tc); err != nil {
			c.fail(t, "case %d: %v", i, err)
			continue
		}
		c.pass()
	}
	c.report(t)
}

func checkTreeOperation(s *CipherSuite, tc *treeOperationsCase) error {
	tr, err := decodeTree(tc.TreeBefore)
	if err != nil {
		return err
	}
	h, err := tr.treeHash(s)
	if err != nil {
		return err
	}
	if !bytes.Equal(h, tc.TreeHashBefore) {
		return fmt.Errorf("tree hash before")
	}
	var p Proposal
	if err := p.Unmarshal(tc.Proposal); err != nil {
		return err
	}
	switch p.Type {
	case ProposalTypeAdd:
		_, err = tr.addLeaf(&p.Add.KeyPackage.LeafNode)
	case ProposalTypeUpdate:
		err = tr.updateLeaf(tc.ProposalSender, &p.Update.LeafNode)
	case ProposalTypeRemove:
		err = tr.removeLeaf(p.Remove.Removed)
	default:
		return fmt.Errorf("unexpected proposal %v", p.Type)
	}
	if err != nil {
		return err
	}
	out, err := tr.export().Marshal()
	if err != nil {
		return err
	}
	if !bytes.Equal(out, tc.TreeAfter) {
		return fmt.Errorf("tree after differs")
	}
	if h, err = tr.treeHash(s); err != nil {
		return err
	}
	if !bytes.Equal(h, tc.TreeHashAfter) {
		return fmt.Errorf("tree hash after")
	}
	return nil
}
