// Package netrecord is the lab's network vantage point (issue 19): a UDP
// relay on loopback between clients and a qpc server that forwards every
// datagram unchanged and writes its time, flow, direction and length to a
// network record (lab/record, schema "qpc-network"). It sees what an
// on-path observer sees: QUIC packets, padding and cover traffic included,
// and nothing inside them.
//
// Start a relay in front of a server and point clients at Addr instead of
// the server:
//
//	w, _ := record.NewNetworkWriter(f, time.Now())
//	r, _ := netrecord.Start("127.0.0.1:0", serverAddr, w)
//	defer r.Close() // flushes the record
//
// Each client address gets a socket of its own towards the server, so the
// server sees one flow per client, as it would without the relay.
package netrecord
