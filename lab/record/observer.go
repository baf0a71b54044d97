package record

import (
	"io"
	"time"
)

// The values of Event.Ev.
const (
	EvOpen      = "open"      // a connection finished its handshake
	EvClose     = "close"     // a connection ended
	EvRequest   = "request"   // the server read a request record
	EvDeliver   = "deliver"   // the server wrote one stored envelope to a fetcher or subscriber
	EvAck       = "ack"       // an Ack deleted messages from a mailbox
	EvSubscribe = "subscribe" // a subscription to a mailbox started
	EvError     = "error"     // the server answered a request with an Error record
)

// The values of Event.Transport.
const (
	TransportUDP   = "udp"
	TransportOnion = "onion"
)

// maxID bounds the length of opaque identifiers (conn, account, kind,
// code, user and conversation names).
const maxID = 128

// maxHex bounds a hex mailbox ID (wire.IDSize is 32 bytes: 64 digits).
const maxHex = 128

// maxHandle bounds a KT label.
const maxHandle = 1024

// Event is one line of the observer record: something the delivery
// service saw on one connection. Fields that do not apply are zero and
// left out of the line.
type Event struct {
	T    int64  `json:"t"`    // nanoseconds since Header.Start
	Conn string `json:"conn"` // the server's own connection ID, e.g. "c17"
	Ev   string `json:"ev"`   // EvOpen, EvRequest, ...
	// Transport is TransportUDP or TransportOnion, on EvOpen only.
	Transport string `json:"transport,omitempty"`
	// Kind is the wire message type of the request, e.g. "Send",
	// "KTPublish" (docs/protocol.md), on EvRequest and EvError.
	Kind string `json:"kind,omitempty"`
	// Mailbox is the receive ID (hex) of the mailbox a request names or
	// the store resolved: Fetch, Subscribe, Ack, DeleteMailbox name it;
	// a Send's is the one its send ID resolved to; CreateMailbox's is the
	// one created.
	Mailbox string `json:"mailbox,omitempty"`
	// SendID is the send ID (hex) a Send carried or a CreateMailbox
	// created.
	SendID string `json:"send_id,omitempty"`
	// Bucket is the size in bytes of the record on the wire: the request
	// record (EvRequest) or the Delivery record (EvDeliver).
	Bucket int `json:"bucket,omitempty"`
	// Epoch is the token epoch of a request that redeemed a token, nil
	// for every other request.
	Epoch *uint32 `json:"epoch,omitempty"`
	// N is a count: messages an Ack deleted (EvAck), tokens an
	// IssueTokens asked for (EvRequest). Omitted when zero.
	N int `json:"n,omitempty"`
	// Account is the opaque account ID of an authenticated account
	// request (login, token issuance, KT publish).
	Account string `json:"account,omitempty"`
	// Handle is the KT label of a KTPublish, KTLookup or KTHistory; of
	// a KTLookupBatch, its labels joined by commas.
	Handle string `json:"handle,omitempty"`
	// Code is the wire error code name, e.g. "TOKEN_SPENT" (EvError).
	Code string `json:"code,omitempty"`
}

func checkEvent(line int, e *Event, last int64) error {
	if e.T < 0 {
		return formatErr(line, "negative t %d", e.T)
	}
	if e.T < last {
		return formatErr(line, "t %d goes back from %d", e.T, last)
	}
	if !isName(e.Conn, maxID) {
		return formatErr(line, "conn %q is not a name of 1..%d printable bytes", e.Conn, maxID)
	}
	switch e.Ev {
	case EvOpen:
		if e.Transport != TransportUDP && e.Transport != TransportOnion {
			return formatErr(line, "open with transport %q, want %q or %q", e.Transport, TransportUDP, TransportOnion)
		}
	case EvClose:
	case EvRequest:
		if e.Kind == "" {
			return formatErr(line, "request without kind")
		}
	case EvDeliver:
		if e.Mailbox == "" || e.Bucket <= 0 {
			return formatErr(line, "deliver without mailbox or bucket")
		}
	case EvAck:
		if e.Mailbox == "" {
			return formatErr(line, "ack without mailbox")
		}
	case EvSubscribe:
		if e.Mailbox == "" {
			return formatErr(line, "subscribe without mailbox")
		}
	case EvError:
		if e.Code == "" {
			return formatErr(line, "error without code")
		}
	default:
		return formatErr(line, "unknown ev %q", e.Ev)
	}
	if e.Transport != "" && e.Ev != EvOpen {
		return formatErr(line, "transport on a %s event", e.Ev)
	}
	if e.Kind != "" && !isName(e.Kind, maxID) {
		return formatErr(line, "kind %q is not a name", e.Kind)
	}
	if e.Code != "" && !isName(e.Code, maxID) {
		return formatErr(line, "code %q is not a name", e.Code)
	}
	if e.Account != "" && !isName(e.Account, maxID) {
		return formatErr(line, "account %q is not a name", e.Account)
	}
	if e.Mailbox != "" && !isHex(e.Mailbox, maxHex) {
		return formatErr(line, "mailbox %q is not lower-case hex", e.Mailbox)
	}
	if e.SendID != "" && !isHex(e.SendID, maxHex) {
		return formatErr(line, "send_id %q is not lower-case hex", e.SendID)
	}
	if e.Bucket < 0 || e.N < 0 {
		return formatErr(line, "negative bucket or n")
	}
	if len(e.Handle) > maxHandle {
		return formatErr(line, "handle longer than %d bytes", maxHandle)
	}
	return nil
}

// ObserverReader reads an observer record.
type ObserverReader struct {
	Header Header
	l      *lines
	last   int64
}

// NewObserverReader reads and checks the header of an observer record.
func NewObserverReader(r io.Reader) (*ObserverReader, error) {
	l := newLines(r)
	h, err := readHeader(l, SchemaObserver)
	if err != nil {
		return nil, err
	}
	return &ObserverReader{Header: h, l: l}, nil
}

// Next returns the next event, or io.EOF after the last.
func (r *ObserverReader) Next() (Event, error) {
	b, err := r.l.next()
	if err != nil {
		return Event{}, err
	}
	var e Event
	if err := strict(r.l.line, b, &e); err != nil {
		return Event{}, err
	}
	if err := checkEvent(r.l.line, &e, r.last); err != nil {
		return Event{}, err
	}
	r.last = e.T
	return e, nil
}

// ReadObserver reads a whole observer record.
func ReadObserver(r io.Reader) (Header, []Event, error) {
	or, err := NewObserverReader(r)
	if err != nil {
		return Header{}, nil, err
	}
	var evs []Event
	for {
		e, err := or.Next()
		if err == io.EOF {
			return or.Header, evs, nil
		}
		if err != nil {
			return or.Header, evs, err
		}
		evs = append(evs, e)
	}
}

// ObserverWriter writes an observer record.
type ObserverWriter struct {
	w    *lineWriter
	last int64
	line int
}

// NewObserverWriter writes the header of an observer record whose times
// count from start.
func NewObserverWriter(w io.Writer, start time.Time) (*ObserverWriter, error) {
	lw, err := newLineWriter(w, headerJSON{V: Version, Schema: SchemaObserver, Start: startString(start)})
	if err != nil {
		return nil, err
	}
	return &ObserverWriter{w: lw, line: 1}, nil
}

// Write checks e against the schema and appends it.
func (w *ObserverWriter) Write(e Event) error {
	w.w.mu.Lock()
	defer w.w.mu.Unlock()
	if err := checkEvent(w.line+1, &e, w.last); err != nil {
		return err
	}
	if err := w.w.write(&e); err != nil {
		return err
	}
	w.line++
	w.last = e.T
	return nil
}

// Flush writes buffered lines to the underlying writer.
func (w *ObserverWriter) Flush() error { return w.w.flush() }
