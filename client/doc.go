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
//	c, err := client.Init(ctx, "qpc://<pin>@host:4433", pin, client.Options{Passphrase: pass})
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
// The protocol layer, Conn, dials a delivery server over QUIC, pins its
// key, and makes the protocol's requests.
//
// The common case:
//
//	conn, err := client.Dial(ctx, "qpc://<pin>@host:4433", client.Options{})
//	defer conn.Close()
//	mb, err := conn.CreateMailbox(ctx, nil)        // receive side: keep mb secret
//	dup, err := conn.Send(ctx, peerSendID, client.NewMessageID(), envelope, nil)
//	msgs, more, err := conn.Fetch(ctx, mb, 0, 100)
//	sub, err := conn.Subscribe(ctx, mb, 0)         // push delivery
//	n, err := conn.Ack(ctx, mb, ids)
//
// A Mailbox holds its owner key; every request that reads or changes a
// mailbox is signed with it over the current connection's TLS exporter, so
// it is re-signed on each retry. Sends carry no credential at all, only a
// delivery token where the server requires one: SendPaid spends one token
// per wire.SendsPerToken Sends on its connection and tells the caller
// whether it spent the one it was given. Every
// record leaves padded to a bucket of the policy the server announced; the
// client refuses to send anything else.
//
// Idempotent requests (Send with its message ID, Fetch, Ack, DeleteMailbox,
// Health, TokenKeys) are retried with exponential backoff and jitter on
// transport failures and on retryable error codes, redialling when the
// connection died.
// CreateMailbox is not retried: a lost reply would leave an orphan mailbox.
//
// Imports: wire, padding, sealed, mls, kt, tokens, account, tor, client/state,
// client/content, quic-go and the standard library; never server.
package client
