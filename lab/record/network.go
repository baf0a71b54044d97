package record

import (
	"io"
	"time"
)

// The values of Packet.Dir.
const (
	DirUp   = "up"   // client to server
	DirDown = "down" // server to client
)

// MaxDatagram is the largest UDP payload a Packet may report.
const MaxDatagram = 65535

// Packet is one line of the network record: one UDP datagram as an
// on-path observer sees it.
type Packet struct {
	T    int64  `json:"t"`    // nanoseconds since Header.Start
	Flow string `json:"flow"` // the client's address, "ip:port"
	Dir  string `json:"dir"`  // DirUp or DirDown
	Len  int    `json:"len"`  // UDP payload bytes
}

func checkPacket(line int, p *Packet, last int64) error {
	if p.T < 0 {
		return formatErr(line, "negative t %d", p.T)
	}
	if p.T < last {
		return formatErr(line, "t %d goes back from %d", p.T, last)
	}
	if !isName(p.Flow, maxID) {
		return formatErr(line, "flow %q is not an address", p.Flow)
	}
	if p.Dir != DirUp && p.Dir != DirDown {
		return formatErr(line, "dir %q, want %q or %q", p.Dir, DirUp, DirDown)
	}
	if p.Len < 0 || p.Len > MaxDatagram {
		return formatErr(line, "len %d outside 0..%d", p.Len, MaxDatagram)
	}
	return nil
}

// NetworkReader reads a network record.
type NetworkReader struct {
	Header Header
	l      *lines
	last   int64
}

// NewNetworkReader reads and checks the header of a network record.
func NewNetworkReader(r io.Reader) (*NetworkReader, error) {
	l := newLines(r)
	h, err := readHeader(l, SchemaNetwork)
	if err != nil {
		return nil, err
	}
	return &NetworkReader{Header: h, l: l}, nil
}

// Next returns the next packet, or io.EOF after the last.
func (r *NetworkReader) Next() (Packet, error) {
	b, err := r.l.next()
	if err != nil {
		return Packet{}, err
	}
	var p Packet
	if err := strict(r.l.line, b, &p); err != nil {
		return Packet{}, err
	}
	if err := checkPacket(r.l.line, &p, r.last); err != nil {
		return Packet{}, err
	}
	r.last = p.T
	return p, nil
}

// ReadNetwork reads a whole network record.
func ReadNetwork(r io.Reader) (Header, []Packet, error) {
	nr, err := NewNetworkReader(r)
	if err != nil {
		return Header{}, nil, err
	}
	var ps []Packet
	for {
		p, err := nr.Next()
		if err == io.EOF {
			return nr.Header, ps, nil
		}
		if err != nil {
			return nr.Header, ps, err
		}
		ps = append(ps, p)
	}
}

// NetworkWriter writes a network record.
type NetworkWriter struct {
	w     *lineWriter
	start time.Time
	last  int64
	line  int
}

// NewNetworkWriter writes the header of a network record whose times
// count from start.
func NewNetworkWriter(w io.Writer, start time.Time) (*NetworkWriter, error) {
	lw, err := newLineWriter(w, headerJSON{V: Version, Schema: SchemaNetwork, Start: startString(start)})
	if err != nil {
		return nil, err
	}
	return &NetworkWriter{w: lw, start: start, line: 1}, nil
}

// Write checks p against the schema and appends it.
func (w *NetworkWriter) Write(p Packet) error {
	w.w.mu.Lock()
	defer w.w.mu.Unlock()
	return w.write(p)
}

func (w *NetworkWriter) write(p Packet) error {
	if err := checkPacket(w.line+1, &p, w.last); err != nil {
		return err
	}
	if err := w.w.write(&p); err != nil {
		return err
	}
	w.line++
	w.last = p.T
	return nil
}

// WriteNow appends a packet seen now: its time is taken under the
// writer's lock, so concurrent callers never write times that go back.
func (w *NetworkWriter) WriteNow(flow, dir string, n int) error {
	w.w.mu.Lock()
	defer w.w.mu.Unlock()
	t := max(int64(time.Since(w.start)), w.last)
	return w.write(Packet{T: t, Flow: flow, Dir: dir, Len: n})
}

// Flush writes buffered lines to the underlying writer.
func (w *NetworkWriter) Flush() error { return w.w.flush() }
