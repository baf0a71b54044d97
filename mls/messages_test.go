package mls

import (
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"testing"
)

// codec is what every top-level structure implements.
type codec interface {
	Marshal() ([]byte, error)
	Unmarshal([]byte) error
}

// mlsMessageCheck decodes an MLSMessage and checks the wire format, plus an
// optional extra check on the decoded message.
func mlsMessageCheck(want WireFormat, extra func(*MLSMessage) error) func() (codec, func() error) {
	return func() (codec, func() error) {
		m := new(MLSMessage)
		return m, func() error {
			if m.WireFormat != want {
				return fmt.Errorf("wire format %v, want %v", m.WireFormat, want)
			}
			if extra != nil {
				return extra(m)
			}
			return nil
		}
	}
}

// publicContent checks that a public message carries the content type the
// vector field names.
func publicContent(want ContentType) func(*MLSMessage) error {
	return func(m *MLSMessage) error {
		if got := m.PublicMessage.Content.ContentType; got != want {
			return fmt.Errorf("content type %v, want %v", got, want)
		}
		return nil
	}
}

// plain returns a decoder target with no extra check.
func plain(newT func() codec) func() (codec, func() error) {
	return func() (codec, func() error) { return newT(), func() error { return nil } }
}

// messageFields maps each messages.json field (test-vectors.md, "Messages")
// to the structure it holds.
var messageFields = map[string]func() (codec, func() error){
	"mls_welcome":     mlsMessageCheck(WireFormatWelcome, nil),
	"mls_group_info":  mlsMessageCheck(WireFormatGroupInfo, nil),
	"mls_key_package": mlsMessageCheck(WireFormatKeyPackage, nil),

	"ratchet_tree":  plain(func() codec { return new(RatchetTree) }),
	"group_secrets": plain(func() codec { return new(GroupSecrets) }),

	"add_proposal":                      plain(func() codec { return new(Add) }),
	"update_proposal":                   plain(func() codec { return new(Update) }),
	"remove_proposal":                   plain(func() codec { return new(Remove) }),
	"pre_shared_key_proposal":           plain(func() codec { return new(PreSharedKey) }),
	"re_init_proposal":                  plain(func() codec { return new(ReInit) }),
	"external_init_proposal":            plain(func() codec { return new(ExternalInit) }),
	"group_context_extensions_proposal": plain(func() codec { return new(GroupContextExtensions) }),

	"commit": plain(func() codec { return new(Commit) }),

	"public_message_application": mlsMessageCheck(WireFormatPublicMessage, publicContent(ContentTypeApplication)),
	"public_message_proposal":    mlsMessageCheck(WireFormatPublicMessage, publicContent(ContentTypeProposal)),
	"public_message_commit":      mlsMessageCheck(WireFormatPublicMessage, publicContent(ContentTypeCommit)),
	"private_message":            mlsMessageCheck(WireFormatPrivateMessage, nil),
}

var (
	messageVectorsOnce sync.Once
	messageVectorsData []map[string]hexBytes
)

// messageVectors loads messages.json once per test binary: it is the
// largest vector file and a dozen tests and fuzz seeds read it. The result
// is shared read-only.
func messageVectors(t testing.TB) []map[string]hexBytes {
	t.Helper()
	messageVectorsOnce.Do(func() { loadVectors(t, "messages.json", &messageVectorsData) })
	if len(messageVectorsData) == 0 {
		t.Fatal("vectors messages.json: no cases loaded")
	}
	return messageVectorsData
}

// TestMessagesVectors decodes and re-encodes every field of every case in
// messages.json. The tally counts one case per field (so 17 per vector
// object): a field is the unit that can independently pass or fail. A field
// with no known decoder counts as a failure, so a new field in the vectors
// cannot go unnoticed.
func TestMessagesVectors(t *testing.T) {
	cases := messageVectors(t)
	c := newTally("messages.json")
	for i, tc := range cases {
		names := make([]string, 0, len(tc))
		for name := range tc {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			data := tc[name]
			mk, ok := messageFields[name]
			if !ok {
				c.fail(t, "case %d: field %q has no decoder", i, name)
				continue
			}
			v, check := mk()
			if err := v.Unmarshal(data); err != nil {
				c.fail(t, "case %d %s: decode: %v", i, name, err)
				continue
			}
			if err := check(); err != nil {
				c.fail(t, "case %d %s: %v", i, name, err)
				continue
			}
			out, err := v.Marshal()
			if err != nil {
				c.fail(t, "case %d %s: encode: %v", i, name, err)
				continue
			}
			if !bytes.Equal(out, data) {
				c.fail(t, "case %d %s: re-encoding differs:\n got %x\nwant %x", i, name, out, data)
				continue
			}
			c.pass()
		}
	}
	c.report(t)
}

// subRoundTrip checks one nested structure on its own: its standalone
// encoding must decode into a fresh value and re-encode identically, and it
// must occur verbatim inside the outer vector it came from (so nested and
// standalone encodings agree with the vector, not just with each other).
func subRoundTrip(t *testing.T, where, name string, v, fresh codec, outer []byte) bool {
	t.Helper()
	enc, err := v.Marshal()
	if err != nil {
		t.Errorf("%s: %s: encode: %v", where, name, err)
		return false
	}
	if !bytes.Contains(outer, enc) {
		t.Errorf("%s: %s: standalone encoding %x not found in the vector", where, name, enc)
		return false
	}
	if err := fresh.Unmarshal(enc); err != nil {
		t.Errorf("%s: %s: decode standalone: %v", where, name, err)
		return false
	}
	again, err := fresh.Marshal()
	if err != nil || !bytes.Equal(again, enc) {
		t.Errorf("%s: %s: standalone round trip: %v\n got %x\nwant %x", where, name, err, again, enc)
		return false
	}
	return true
}

// subStructures lists the nested structures of a decoded top-level value,
// each with a fresh value of its type to decode into.
type subStructure struct {
	name     string
	v, fresh codec
}

func leafSubs(prefix string, l *LeafNode) []subStructure {
	subs := []subStructure{
		{prefix + "LeafNode", l, new(LeafNode)},
		{prefix + "Credential", &l.Credential, new(Credential)},
		{prefix + "Capabilities", &l.Capabilities, new(Capabilities)},
	}
	if l.Lifetime != nil {
		subs = append(subs, subStructure{prefix + "Lifetime", l.Lifetime, new(Lifetime)})
	}
	return subs
}

func keyPackageSubs(kp *KeyPackage) []subStructure {
	return append([]subStructure{
		{"KeyPackage", kp, new(KeyPackage)},
		{"KeyPackageTBS", &kp.KeyPackageTBS, new(KeyPackageTBS)},
	}, leafSubs("KeyPackage.", &kp.LeafNode)...)
}

func proposalSubs(p *Proposal) []subStructure {
	subs := []subStructure{{"Proposal", p, new(Proposal)}}
	switch {
	case p.Add != nil:
		subs = append(subs, subStructure{"Add", p.Add, new(Add)})
		subs = append(subs, keyPackageSubs(&p.Add.KeyPackage)...)
	case p.Update != nil:
		subs = append(subs, subStructure{"Update", p.Update, new(Update)})
		subs = append(subs, leafSubs("Update.", &p.Update.LeafNode)...)
	case p.PreSharedKey != nil:
		subs = append(subs, subStructure{"PreSharedKeyID", &p.PreSharedKey.PSK, new(PreSharedKeyID)})
	}
	return subs
}

func commitSubs(c *Commit) []subStructure {
	subs := []subStructure{{"Commit", c, new(Commit)}}
	for i := range c.Proposals {
		subs = append(subs, subStructure{"ProposalOrRef", &c.Proposals[i], new(ProposalOrRef)})
		if p := c.Proposals[i].Proposal; p != nil {
			subs = append(subs, proposalSubs(p)...)
		}
	}
	if c.Path != nil {
		subs = append(subs, subStructure{"UpdatePath", c.Path, new(UpdatePath)})
		subs = append(subs, leafSubs("UpdatePath.", &c.Path.LeafNode)...)
		for i := range c.Path.Nodes {
			n := &c.Path.Nodes[i]
			subs = append(subs, subStructure{"UpdatePathNode", n, new(UpdatePathNode)})
			for j := range n.EncryptedPathSecret {
				subs = append(subs, subStructure{"HPKECiphertext", &n.EncryptedPathSecret[j], new(HPKECiphertext)})
			}
		}
	}
	return subs
}

func framedSubs(fc *FramedContent, auth *FramedContentAuthData) []subStructure {
	subs := []subStructure{
		{"FramedContent", fc, new(FramedContent)},
		{"Sender", &fc.Sender, new(Sender)},
		{"FramedContentAuthData", auth, &FramedContentAuthData{ContentType: fc.ContentType}},
	}
	switch {
	case fc.Proposal != nil:
		subs = append(subs, proposalSubs(fc.Proposal)...)
	case fc.Commit != nil:
		subs = append(subs, commitSubs(fc.Commit)...)
	default:
		subs = append(subs, subStructure{"ApplicationData", &fc.ApplicationData, new(ApplicationData)})
	}
	return subs
}

func treeSubs(tree RatchetTree) []subStructure {
	var subs []subStructure
	for _, n := range tree {
		if n == nil {
			continue
		}
		subs = append(subs, subStructure{"Node", n, new(Node)})
		if n.ParentNode != nil {
			subs = append(subs, subStructure{"ParentNode", n.ParentNode, new(ParentNode)})
		} else {
			subs = append(subs, leafSubs("Node.", n.LeafNode)...)
		}
	}
	return subs
}

func messageSubs(m *MLSMessage) []subStructure {
	switch {
	case m.KeyPackage != nil:
		return keyPackageSubs(m.KeyPackage)
	case m.Welcome != nil:
		subs := []subStructure{{"Welcome", m.Welcome, new(Welcome)}}
		for i := range m.Welcome.Secrets {
			subs = append(subs,
				subStructure{"EncryptedGroupSecrets", &m.Welcome.Secrets[i], new(EncryptedGroupSecrets)},
				subStructure{"HPKECiphertext", &m.Welcome.Secrets[i].EncryptedGroupSecrets, new(HPKECiphertext)})
		}
		return subs
	case m.GroupInfo != nil:
		return []subStructure{
			{"GroupInfo", m.GroupInfo, new(GroupInfo)},
			{"GroupInfoTBS", &m.GroupInfo.GroupInfoTBS, new(GroupInfoTBS)},
			{"GroupContext", &m.GroupInfo.GroupContext, new(GroupContext)},
		}
	case m.PublicMessage != nil:
		pm := m.PublicMessage
		return append([]subStructure{{"PublicMessage", pm, new(PublicMessage)},
			{"AuthenticatedContent", pm.AuthenticatedContent(), new(AuthenticatedContent)}},
			framedSubs(&pm.Content, &pm.Auth)...)
	case m.PrivateMessage != nil:
		return []subStructure{{"PrivateMessage", m.PrivateMessage, new(PrivateMessage)}}
	}
	return nil
}

// TestMessagesSubStructures round-trips every nested structure of every
// messages.json value on its own, so each type's standalone Marshal and
// Unmarshal are checked against the vectors too, not only the top-level
// ones. It is a plain test, not part of the messages.json tally.
func TestMessagesSubStructures(t *testing.T) {
	cases := messageVectors(t)
	seen := map[string]int{}
	for i, tc := range cases {
		for name, data := range tc {
			mk := messageFields[name]
			if mk == nil {
				continue
			}
			v, _ := mk()
			if err := v.Unmarshal(data); err != nil {
				continue // reported by TestMessagesVectors
			}
			var subs []subStructure
			switch x := v.(type) {
			case *MLSMessage:
				subs = messageSubs(x)
			case *RatchetTree:
				subs = treeSubs(*x)
			case *GroupSecrets:
				subs = []subStructure{{"GroupSecrets", x, new(GroupSecrets)}}
				if x.PathSecret != nil {
					subs = append(subs, subStructure{"PathSecret", x.PathSecret, new(PathSecret)})
				}
				for j := range x.PSKs {
					subs = append(subs, subStructure{"PreSharedKeyID", &x.PSKs[j], new(PreSharedKeyID)})
				}
			case *Add:
				subs = keyPackageSubs(&x.KeyPackage)
			case *Update:
				subs = append([]subStructure{{"Update", x, new(Update)}}, leafSubs("Update.", &x.LeafNode)...)
			case *PreSharedKey:
				subs = []subStructure{{"PreSharedKeyID", &x.PSK, new(PreSharedKeyID)}}
			case *Commit:
				subs = commitSubs(x)
			}
			for _, s := range subs {
				if subRoundTrip(t, fmt.Sprintf("case %d %s", i, name), s.name, s.v, s.fresh, data) {
					seen[s.name]++
				}
			}
		}
	}
	// Every nested type must have been exercised at least once, or the
	// walk above has silently stopped reaching it. (messages.json has no
	// non-blank parent nodes; TestEncodingsInOtherVectors covers those.)
	for _, name := range []string{"KeyPackage", "KeyPackageTBS", "KeyPackage.LeafNode", "KeyPackage.Credential",
		"KeyPackage.Capabilities", "KeyPackage.Lifetime", "Update.LeafNode", "UpdatePath.LeafNode", "Node.LeafNode",
		"Welcome", "EncryptedGroupSecrets", "GroupInfo", "GroupInfoTBS", "GroupContext", "GroupSecrets", "PathSecret",
		"PreSharedKeyID", "Commit", "ProposalOrRef", "Proposal", "Add", "Update", "UpdatePath", "UpdatePathNode",
		"HPKECiphertext", "Node", "PublicMessage", "AuthenticatedContent", "FramedContent", "Sender",
		"FramedContentAuthData", "ApplicationData", "PrivateMessage"} {
		if seen[name] == 0 {
			t.Errorf("no %s was round-tripped", name)
		}
	}
}

// otherVectorField is one encoded structure found in a vector file other
// than messages.json.
type otherVectorField struct {
	where string
	data  []byte
	mk    func() (codec, func() error)
}

// hexAt decodes the hex string at obj[key]; a JSON null (an absent
// optional, test-vectors.md "Representation") yields ok == false.
func hexAt(t *testing.T, obj map[string]any, key string) ([]byte, bool) {
	t.Helper()
	v, present := obj[key]
	if !present {
		t.Fatalf("vector object has no %q", key)
	}
	if v == nil {
		return nil, false
	}
	s, isString := v.(string)
	if !isString {
		t.Fatalf("%q is %T, want a hex string", key, v)
	}
	var h hexBytes
	if err := h.UnmarshalJSON([]byte(strconv.Quote(s))); err != nil {
		t.Fatalf("%q: %v", key, err)
	}
	return h, true
}

func objectsAt(t *testing.T, obj map[string]any, key string) []map[string]any {
	t.Helper()
	list, ok := obj[key].([]any)
	if !ok {
		t.Fatalf("%q is %T, want a list", key, obj[key])
	}
	out := make([]map[string]any, len(list))
	for i, e := range list {
		if out[i], ok = e.(map[string]any); !ok {
			t.Fatalf("%q[%d] is %T, want an object", key, i, e)
		}
	}
	return out
}

// otherVectorFields extracts the MLS structures each vector file carries,
// per test-vectors.md. Fields that are secrets, hashes or keys are not
// structures and are left out.
func otherVectorFields(t *testing.T, file string, obj map[string]any) []otherVectorField {
	t.Helper()
	var out []otherVectorField
	add := func(where string, data []byte, mk func() (codec, func() error)) {
		out = append(out, otherVectorField{where, data, mk})
	}
	field := func(key string, mk func() (codec, func() error)) {
		if data, ok := hexAt(t, obj, key); ok {
			add(key, data, mk)
		}
	}
	tree := plain(func() codec { return new(RatchetTree) })
	privateMsg := mlsMessageCheck(WireFormatPrivateMessage, nil)
	publicMsg := mlsMessageCheck(WireFormatPublicMessage, nil)
	switch file {
	case "transcript-hashes.json":
		field("authenticated_content", plain(func() codec { return new(AuthenticatedContent) }))
	case "welcome.json":
		field("key_package", mlsMessageCheck(WireFormatKeyPackage, nil))
		field("welcome", mlsMessageCheck(WireFormatWelcome, nil))
	case "tree-validation.json":
		field("tree", tree)
	case "treekem.json":
		field("ratchet_tree", tree)
		for i, up := range objectsAt(t, obj, "update_paths") {
			data, _ := hexAt(t, up, "update_path")
			add(fmt.Sprintf("update_paths[%d]", i), data, plain(func() codec { return new(UpdatePath) }))
		}
	case "tree-operations.json":
		field("tree_before", tree)
		field("tree_after", tree)
		field("proposal", plain(func() codec { return new(Proposal) }))
	case "passive-client-welcome.json", "passive-client-handling-commit.json", "passive-client-random.json":
		field("key_package", mlsMessageCheck(WireFormatKeyPackage, nil))
		field("welcome", mlsMessageCheck(WireFormatWelcome, nil))
		field("ratchet_tree", tree)
		for i, ep := range objectsAt(t, obj, "epochs") {
			// Proposals and commits arrive as public or private messages.
			anyFramed := func() (codec, func() error) {
				m := new(MLSMessage)
				return m, func() error {
					if !framedWireFormat(m.WireFormat) {
						return fmt.Errorf("wire format %v, want a public or private message", m.WireFormat)
					}
					return nil
				}
			}
			list, _ := ep["proposals"].([]any)
			for j := range list {
				data, _ := hexAt(t, map[string]any{"p": list[j]}, "p")
				add(fmt.Sprintf("epochs[%d].proposals[%d]", i, j), data, anyFramed)
			}
			if data, ok := hexAt(t, ep, "commit"); ok {
				add(fmt.Sprintf("epochs[%d].commit", i), data, anyFramed)
			}
		}
	case "message-protection.json":
		field("proposal", plain(func() codec { return new(Proposal) }))
		field("commit", plain(func() codec { return new(Commit) }))
		field("proposal_pub", publicMsg)
		field("commit_pub", publicMsg)
		field("proposal_priv", privateMsg)
		field("commit_priv", privateMsg)
		field("application_priv", privateMsg)
	default:
		t.Fatalf("no field list for %s", file)
	}
	return out
}

// TestEncodingsInOtherVectors decodes and re-encodes every MLS structure
// embedded in the other vector files (trees with parent nodes, update paths
// with encrypted path secrets, real handshake messages), and every nested
// structure of them. One case is one embedded structure; the summary line
// is labelled <file>#encodings so it cannot be mistaken for that file's own
// (crypto) tally.
func TestEncodingsInOtherVectors(t *testing.T) {
	seen := map[string]int{}
	for _, file := range []string{"transcript-hashes.json", "welcome.json", "tree-validation.json", "treekem.json",
		"tree-operations.json", "passive-client-welcome.json", "passive-client-handling-commit.json",
		"passive-client-random.json", "message-protection.json"} {
		var objs []map[string]any
		loadVectors(t, file, &objs)
		c := newTally(file + "#encodings")
		for i, obj := range objs {
			for _, f := range otherVectorFields(t, file, obj) {
				where := fmt.Sprintf("%s case %d %s", file, i, f.where)
				v, check := f.mk()
				if err := v.Unmarshal(f.data); err != nil {
					c.fail(t, "%s: decode: %v", where, err)
					continue
				}
				if err := check(); err != nil {
					c.fail(t, "%s: %v", where, err)
					continue
				}
				out, err := v.Marshal()
				if err != nil || !bytes.Equal(out, f.data) {
					c.fail(t, "%s: re-encode: %v\n got %x\nwant %x", where, err, out, f.data)
					continue
				}
				var subs []subStructure
				switch x := v.(type) {
				case *MLSMessage:
					subs = messageSubs(x)
				case *RatchetTree:
					subs = treeSubs(*x)
				case *Commit:
					subs = commitSubs(x)
				case *Proposal:
					subs = proposalSubs(x)
				case *UpdatePath:
					subs = commitSubs(&Commit{Path: x})[1:]
				case *AuthenticatedContent:
					subs = append([]subStructure{{"AuthenticatedContent", x, new(AuthenticatedContent)}},
						framedSubs(&x.Content, &x.Auth)...)
				}
				ok := true
				for _, s := range subs {
					if !subRoundTrip(t, where, s.name, s.v, s.fresh, f.data) {
						ok = false
						break
					}
					seen[s.name]++
				}
				if !ok {
					c.failed++
					continue
				}
				c.pass()
			}
		}
		c.report(t)
	}
	// The structures messages.json lacks must have been reached here.
	for _, name := range []string{"ParentNode", "HPKECiphertext", "UpdatePathNode", "AuthenticatedContent"} {
		if seen[name] == 0 {
			t.Errorf("no %s was round-tripped", name)
		}
	}
}

// TestSignedEncodings checks the to-be-signed encodings this file set
// defines — LeafNodeTBS (RFC 9420 §7.2) and KeyPackageTBS (§10) — by
// verifying the vectors' real signatures over them: a wrong field order,
// a missing group_id/leaf_index arm or a stray byte makes verification
// fail. Trees come from tree-validation.json (leaves of every source, bound
// to group_id and leaf index), key packages from welcome.json and the
// passive-client files. One case is one signature. Suites this package
// does not implement (LookupCipherSuite) are counted as skipped.
func TestSignedEncodings(t *testing.T) {
	type check struct {
		where, label  string
		pub, tbs, sig []byte
		suite         CipherSuiteID
	}
	keyPackageChecks := func(where string, suite CipherSuiteID, data []byte) ([]check, error) {
		var m MLSMessage
		if err := m.Unmarshal(data); err != nil {
			return nil, err
		}
		if m.KeyPackage == nil {
			return nil, fmt.Errorf("not a key package: %v", m.WireFormat)
		}
		kp := m.KeyPackage
		kpTBS, err := kp.MarshalTBS()
		if err != nil {
			return nil, err
		}
		// Key-package leaves are not bound to a group; the arguments must
		// be ignored, so pass junk to prove it.
		leafTBS, err := kp.LeafNode.MarshalTBS([]byte("ignored"), 99)
		if err != nil {
			return nil, err
		}
		pub := kp.LeafNode.SignatureKey
		return []check{
			{where + " KeyPackageTBS", "KeyPackageTBS", pub, kpTBS, kp.Signature, suite},
			{where + " LeafNodeTBS", "LeafNodeTBS", pub, leafTBS, kp.LeafNode.Signature, suite},
		}, nil
	}

	for _, file := range []string{"tree-validation.json", "welcome.json", "passive-client-welcome.json"} {
		var objs []map[string]any
		loadVectors(t, file, &objs)
		c := newTally(file + "#signatures")
		for i, obj := range objs {
			suiteNum, ok := obj["cipher_suite"].(float64)
			if !ok {
				t.Fatalf("%s case %d: no cipher_suite", file, i)
			}
			suite := CipherSuiteID(suiteNum)
			var checks []check
			where := fmt.Sprintf("%s case %d", file, i)
			switch file {
			case "tree-validation.json":
				data, _ := hexAt(t, obj, "tree")
				groupID, _ := hexAt(t, obj, "group_id")
				var tree RatchetTree
				if err := tree.Unmarshal(data); err != nil {
					c.fail(t, "%s: tree: %v", where, err)
					continue
				}
				for idx, n := range tree {
					if n == nil || n.LeafNode == nil {
						continue
					}
					// Leaves sit at even node indices (RFC 9420 §7.1).
					tbs, err := n.LeafNode.MarshalTBS(groupID, uint32(idx/2))
					if err != nil {
						c.fail(t, "%s node %d: %v", where, idx, err)
						continue
					}
					checks = append(checks, check{fmt.Sprintf("%s node %d (%v)", where, idx, n.LeafNode.Source),
						"LeafNodeTBS", n.LeafNode.SignatureKey, tbs, n.LeafNode.Signature, suite})
				}
			default:
				data, _ := hexAt(t, obj, "key_package")
				kc, err := keyPackageChecks(where, suite, data)
				if err != nil {
					c.fail(t, "%s: key package: %v", where, err)
					continue
				}
				checks = kc
			}
			for _, ch := range checks {
				cs, err := LookupCipherSuite(ch.suite)
				if err != nil {
					c.skip(fmt.Sprintf("cipher suite %d not implemented by this package", ch.suite))
					continue
				}
				if err := cs.VerifyWithLabel(ch.pub, ch.label, ch.tbs, ch.sig); err != nil {
					c.fail(t, "%s: %v", ch.where, err)
					continue
				}
				// A flipped byte in the encoding must break the signature,
				// or the check proves nothing about the encoding.
				bad := append([]byte(nil), ch.tbs...)
				bad[len(bad)/2] ^= 1
				if cs.VerifyWithLabel(ch.pub, ch.label, bad, ch.sig) == nil {
					c.fail(t, "%s: signature verifies over a corrupted encoding", ch.where)
					continue
				}
				c.pass()
			}
		}
		c.report(t)
	}
}

// TestRatchetTreeExtension decodes the ratchet_tree extension of every
// GroupInfo in messages.json (RFC 9420 §12.4.3.3: its data is the
// RatchetTree encoding) and checks that it re-encodes to the extension data
// exactly. (The other extension payloads live with the validation code.)
func TestRatchetTreeExtension(t *testing.T) {
	cases := messageVectors(t)
	found := 0
	for i, tc := range cases {
		var m MLSMessage
		if err := m.Unmarshal(tc["mls_group_info"]); err != nil || m.GroupInfo == nil {
			t.Errorf("case %d: group info: %v", i, err)
			continue
		}
		for _, e := range m.GroupInfo.Extensions {
			if e.Type != 2 { // ratchet_tree, RFC 9420 §17.3
				continue
			}
			var tree RatchetTree
			if err := tree.Unmarshal(e.Data); err != nil {
				t.Errorf("case %d: ratchet_tree extension: %v", i, err)
				continue
			}
			out, err := tree.Marshal()
			if err != nil || !bytes.Equal(out, e.Data) {
				t.Errorf("case %d: ratchet_tree extension: re-encode %v", i, err)
				continue
			}
			found++
		}
	}
	if found == 0 {
		t.Error("no ratchet_tree extension in messages.json group infos")
	}
}
