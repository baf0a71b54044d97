// Package keyset keeps the nodes of one server on one key set. Several
// qpc-server nodes sharing a PostgreSQL store present ONE server to its
// clients, so each must hold the same TLS, token, OPAQUE, key-transparency
// and onion keys. The keys stay in each node's data directory, provisioned
// by the operator; the database holds only their public fingerprints
// (docs/adr/0039-one-key-set-for-all-nodes.md).
//
// Call Open with the store URL first, then, before any key is created,
// Recorded (a node whose data directory lacks a recorded key must not
// make one of its own), and once the keys are loaded, Check: the first
// node records its fingerprints, every later one is refused
// (ErrMismatch, naming the key) when one of its keys differs.
package keyset
