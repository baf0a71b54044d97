// Package record holds the three records of the qpc traffic-analysis lab
// (issue 19), each a versioned JSONL stream whose first line is a header:
//
//   - the observer record ("qpc-observer"): what the delivery service sees,
//     one Event per line, written by the server itself from its request
//     path when server.Options.Observer is set (server/observer.go);
//   - the network record ("qpc-network"): what an on-path observer sees,
//     one Packet per UDP datagram, written by the lab's relay
//     (lab/netrecord);
//   - the ground truth ("qpc-truth"): who wrote to whom, written by the
//     population and never read by attacks.
//
// docs/research.md ("## Records") is the specification of every field.
//
// Read a record with NewObserverReader, NewNetworkReader or
// NewTruthReader, then call Next until it returns io.EOF:
//
//	r, err := record.NewObserverReader(f)
//	for {
//		ev, err := r.Next()
//		if err == io.EOF { break }
//		...
//	}
//
// Write one with NewObserverWriter, NewNetworkWriter or NewTruthWriter,
// then Write each line and Flush at the end. Writers are safe for
// concurrent use.
//
// Readers check the header's version and schema, refuse lines longer than
// MaxLine, fields the schema does not define, values outside their range
// and times that go backwards, and name the line of every error, which
// wraps ErrFormat. The server never imports this package (ARCHITECTURE.md:
// server never imports lab), so server/observer.go has its own encoder;
// the lab's tests read what it writes with this package.
package record
