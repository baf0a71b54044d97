// Package client is the quicprochat SDK. It has two layers.
//
// The messenger, Client (messenger.go and the files beside it), is what an
// application uses: a user's encrypted local state (client/state), the
// account (OPAQUE) and its token wallet, the identity published in key
// transparency and checked for others, contacts with safety numbers, and
// conversations — every one an MLS group (suite 0x004D) whose messages are
// sealed (package sealed) to per-conversation mailboxes. It keeps an
// outbox that retries with stable message IDs, detects gaps and duplicates
// by per-sender sequence numbers inside the encryption, gossips
// key-transparency checkpoints inside every message, and raises alarms with
// evidence. docs/user-guide.md shows it through the qpc command;
// docs/protocol.md §11 gives the content formats.
//
//	c, err := client.Init(ctx, "qpc://<pin>@host:4433", pin, client.Options{Home: dir, Passphrase: pass})
//	err = c.Register(ctx, "alice", password)
//	err = c.Send(ctx, "bob", "hello")        // starts the direct chat
//	events, err := c.Sync(ctx)               // or c.Follow(ctx, func(client.Event){...})
//
// Sends never refill the token wallet (a refill just after a send would
// tie the account to the anonymous connection). Follow refills it on a
// schedule of its own; a long-lived program that sends without following
// runs that schedule with StartRefills, and a one-shot one calls
// RefillIfEmpty before anything else.
//
// The lower layer, the protocol connection (protocol.Conn: Dial, the
// mailbox, account, key-transparency, token and KeyPackage requests, the
// token Wallet), is package client/protocol; the messenger opens one
// connection per role through it (messenger.go). A program that manages
// its own mailboxes and envelopes uses client/protocol alone.
//
// Options.Home, the state directory, must be given (ErrNoHome): the SDK
// reads no environment. The qpc command chooses it from --home, QPC_HOME,
// else $XDG_DATA_HOME/qpc or ~/.local/share/qpc.
//
// Imports: client/protocol, wire, padding, sealed, mls, kt, tokens,
// client/state, client/content, client/backup, client/safetext, quic-go
// (to tell transport errors) and the standard library; never server (docs/adr/0028-client-protocol-package.md).
package client
