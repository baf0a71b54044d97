package attack

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Event is one line of the observer record v1 (docs/research.md, "Observer
// record"). Fields a line leaves out are zero.
type Event struct {
	T         int64  `json:"t"`
	Conn      string `json:"conn,omitempty"`
	Ev        string `json:"ev"`
	Transport string `json:"transport,omitempty"`
	Kind      string `json:"kind,omitempty"`
	Mailbox   string `json:"mailbox,omitempty"`
	Bucket    int    `json:"bucket,omitempty"`
	Epoch     int64  `json:"epoch,omitempty"`
	N         int    `json:"n,omitempty"`
	Account   string `json:"account,omitempty"`
	Handle    string `json:"handle,omitempty"`
}

// header is the first line of a record.
type header struct {
	V      int    `json:"v"`
	Schema string `json:"schema"`
	Start  string `json:"start"`
}

// ErrRecord marks a record this package cannot read.
var ErrRecord = errors.New("attack: bad observer record")

// maxLine bounds one JSONL line; an observer event is far below it.
const maxLine = 64 << 10

// ReadObserver reads an observer record (JSONL, schema qpc-observer v1)
// and calls fn for every event in order. It refuses another schema or
// version, a line that is not JSON, and events out of time order (the
// attacks are single-pass).
func ReadObserver(r io.Reader, fn func(*Event) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return fmt.Errorf("%w: header: %v", ErrRecord, err)
		}
		return fmt.Errorf("%w: empty", ErrRecord)
	}
	var h header
	if err := json.Unmarshal(sc.Bytes(), &h); err != nil {
		return fmt.Errorf("%w: header: %v", ErrRecord, err)
	}
	if h.Schema != "qpc-observer" || h.V != 1 {
		return fmt.Errorf("%w: schema %q version %d, want qpc-observer 1", ErrRecord, h.Schema, h.V)
	}
	line := 1
	var last int64
	for sc.Scan() {
		line++
		if len(sc.Bytes()) == 0 {
			continue
		}
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("%w: line %d: %v", ErrRecord, line, err)
		}
		if e.Ev == "" {
			return fmt.Errorf("%w: line %d: no ev", ErrRecord, line)
		}
		if e.T < last {
			return fmt.Errorf("%w: line %d: time %d before %d", ErrRecord, line, e.T, last)
		}
		last = e.T
		if err := fn(&e); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%w: line %d: %v", ErrRecord, line+1, err)
	}
	return nil
}
