// Package mls implements the Messaging Layer Security protocol (RFC 9420)
// for qpc: continuous group key agreement with forward secrecy and
// post-compromise security, for groups of two to thousands of members.
//
// # Cipher suites
//
// Suites 0x0001, 0x0002 and 0x0003 of RFC 9420 §17.1, and 0x004D, the
// X-Wing hybrid post-quantum KEM with ChaCha20-Poly1305, SHA-256 and
// Ed25519, which qpc uses by default. Suites 4–7 are not implemented;
// LookupCipherSuite reports ErrUnsupportedCipherSuite for them.
//
// # The common case
//
// Each client has an Identity (a signature key pair and a basic credential
// carrying the user's handle) and publishes KeyPackages so others can add
// it:
//
//	id, _ := mls.NewBasicIdentity(mls.SuiteXWingChaCha20Poly1305SHA256Ed25519, []byte("@alice"))
//	kp, _ := mls.NewKeyPackage(id, nil)          // keep kp private
//	publish(kp.KeyPackage.Marshal())             // KeyPackage only
//
// The creator starts a group and adds members; each operation is a commit
// that moves the group to a new epoch:
//
//	g, _ := mls.Create(id, cfg, nil)
//	res, _ := g.Add(&bobKP)                      // commit with Add proposals
//	send(members, res.Commit)                    // to the existing members
//	send(bob, res.Welcome)                       // to the added members
//
// The new member joins from the Welcome with its private key package:
//
//	bg, _ := mls.Join(welcome, kpPrivate, cfg, nil)
//
// Members exchange application messages and process everything they
// receive with one call:
//
//	msg, _ := g.Encrypt([]byte("hello"))
//	r, err := bg.ProcessMessage(msg)             // r.ApplicationData, r.Sender
//
// Remove(leaves...) and Update() are commits like Add; Propose sends a
// proposal that any member may later commit (Commit(nil) commits all
// pending proposals and refreshes the committer's keys). JoinExternal lets
// a client join from a GroupInfo (g.GroupInfo()) without a Welcome;
// JoinExternalWith with Resync lets a member that lost its state rejoin,
// removing its old leaf in the same commit (§12.4.3.2), and members learn
// from Received.External who joined and whom it replaced:
//
//	ng, commit, _ := mls.JoinExternalWith(gi, id, cfg, &mls.ExternalJoinOptions{GroupID: gid, Resync: true})
//	send(members, commit)                        // a PublicMessage
//
// Between sessions store the state with g.Marshal and restore it with
// UnmarshalGroup; the encoding holds private keys and must be encrypted
// at rest. EpochAuthenticator lets members compare epochs out of band, and
// ExportSecret derives application keys from the epoch (§8.5).
//
// # Safety properties of the API
//
//   - ProcessMessage applies a message fully or not at all: it works on a
//     copy of the state and swaps it in on success, so an error leaves the
//     group exactly as it was (the tests compare the stored state).
//   - Every error wraps one of the package's sentinel errors
//     (ErrInvalidPath, ErrParentHash, ErrInvalidProposals,
//     ErrConfirmationTag, ErrWrongGroup, ErrKeyConsumed, ErrVerifyFailed,
//     ErrWelcomeNotForUs, ...); use errors.Is.
//   - Config.VerifyMember is called for every credential and signature key
//     the group is about to accept — members of a joined tree, added key
//     packages, updated and committed leaves. qpc checks keys against key
//     transparency there; an error rejects the message.
//   - Commit moves the committer to the new epoch at once. A member must
//     not feed its own messages back into ProcessMessage.
//   - Handshake messages are PrivateMessages by default, which hides the
//     committer from the delivery service; Config.PublicHandshake switches
//     to PublicMessage.
//
// # Map of RFC 9420
//
//	§2.1, §6        framing.go, codec.go: wire encodings, strict decoding
//	§4, App. C      treemath.go: array tree arithmetic
//	§5.1–5.2        suite.go, crypto.go: suites, labelled operations, refs
//	§5.3            credential.go, identity.go: credentials, identities
//	§6.1–6.3        protect.go: signing, membership tags, PrivateMessage
//	§7.1–7.3, §7.7  tree.go: ratchet tree, resolution, add/update/remove,
//	                truncation, leaf validation (extensions.go)
//	§7.4–7.6        treekem.go: path secrets, UpdatePath create/process
//	§7.8–7.9        tree.go: tree hashes, parent hashes, validation
//	§8              keyschedule.go, psk.go, transcript.go: key schedule,
//	                PSKs, transcript hashes, exporter
//	§9              secrettree.go: secret tree and hash ratchets
//	§10             identity.go, extensions.go: KeyPackage creation and
//	                validation, last_resort
//	§11             group.go: group creation, Group API
//	§12.1–12.4      commitproc.go: proposals, §12.2 list validation,
//	                commit creation and processing
//	§12.4.3         join.go: Welcome, GroupInfo, external commits
//	§13, §17.3      extensions.go: required_capabilities, external_senders,
//	                external_pub, ratchet_tree
//	(storage)       state.go: Group.Marshal, UnmarshalGroup
//
// Tests run the IETF interoperability vectors (tree-math, crypto-basics,
// key-schedule, secret-tree, message-protection, messages, treekem,
// tree-operations, tree-validation, welcome, passive-client-*) from
// testdata/vectors (gzip-compressed copies of the upstream files; its
// README.md says where they come from), or from QPC_MLS_VECTORS.
package mls
