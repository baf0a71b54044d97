// Package protocol is the client side of the qpc protocol: a connection
// to one delivery server and the requests it makes (docs/protocol.md §4).
// It is the SDK's lower layer; the messenger (package client) is built on
// it, and a program that manages its own mailboxes and envelopes uses it
// alone.
//
// Call Dial first. It connects over QUIC, pins the server's key (the
// qpc:// address) and its padding policy (Options.Policy), and runs the
// version handshake:
//
//	conn, err := protocol.Dial(ctx, "qpc://<pin>@host:4433", protocol.Options{})
//	defer conn.Close()
//	mb, err := conn.CreateMailbox(ctx, nil)        // receive side: keep mb secret
//	dup, err := conn.Send(ctx, peerSendID, protocol.NewMessageID(), envelope, nil)
//	msgs, more, err := conn.Fetch(ctx, mb, 0, 100)
//	sub, err := conn.Subscribe(ctx, mb, 0)         // push delivery
//	n, err := conn.Ack(ctx, mb, ids)
//
// A Mailbox holds its owner key; every request that reads or changes a
// mailbox is signed with it over the current connection's TLS exporter, so
// it is re-signed on each retry. Sends carry no credential at all, only a
// delivery token where the server requires one: SendPaid spends one token
// per wire.SendsPerToken Sends on its connection and tells the caller
// whether it spent the one it was given. Every record leaves padded to a
// bucket of the policy the server announced; the connection refuses to
// send anything else.
//
// Idempotent requests (Send with its message ID, Fetch, Ack,
// DeleteMailbox, Health, TokenKeys, the key-transparency proofs) are
// retried with exponential backoff and jitter on transport failures and
// on retryable error codes, redialling when the connection died.
// CreateMailbox, the account exchanges, IssueTokens, KTPublish and the
// KeyPackage requests are not: a lost reply may have changed the server.
//
// An address may list several endpoints, the nodes of one server
// (docs/protocol.md §1.1): Conn dials them in a random order and, when
// its connection fails or dies, redials starting with the next, so the
// retries above and the subscriptions' resubscriptions go on through
// another node. Conn.Endpoint says which one serves.
//
// Beside the mailbox requests, Conn makes the account exchanges (Register,
// Login, OPAQUE, returning a Session), the key-transparency requests
// (KTLookup, KTPublish, KTMonitor, ... checked by a kt.Verifier pinned
// with a KTPin), the token requests (TokenKeys, IssueTokens) and the
// KeyPackage pool requests. A Wallet holds delivery tokens and refills
// them on a schedule of its own, each token key checked against key
// transparency first. TorOptions route connections through Tor.
//
// Use separate connections (over Tor, separate circuits) for the account
// and for anonymous traffic: requests on one connection are trivially
// linkable by the server.
//
// Imports: wire, padding, kt, tokens, account, tor, quic-go and the
// standard library; never the messenger (client) or any other package of
// client, never server (docs/adr/0028-client-protocol-package.md).
package protocol
