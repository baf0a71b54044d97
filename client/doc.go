// Package client is the quicprochat SDK: it dials a delivery server over
// QUIC, pins its key, and makes the protocol's requests.
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
// it is re-signed on each retry. Sends carry no credential at all. Every
// record leaves padded to a bucket of the policy the server announced; the
// client refuses to send anything else.
//
// Idempotent requests (Send with its message ID, Fetch, Ack, DeleteMailbox,
// Health, TokenKeys) are retried with exponential backoff and jitter on
// transport failures and on retryable error codes, redialling when the
// connection died.
// CreateMailbox is not retried: a lost reply would leave an orphan mailbox.
//
// Imports: padding, wire, quic-go and the standard library; never server.
package client
