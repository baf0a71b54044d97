package record

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// Version is the record format version every header carries as "v".
const Version = 1

// The schema names of the three records.
const (
	SchemaObserver = "qpc-observer"
	SchemaNetwork  = "qpc-network"
	SchemaTruth    = "qpc-truth"
)

// MaxLine is the longest line, newline included, that a reader accepts
// and a writer writes. Observer and network lines are a few hundred bytes;
// the bound is for ground-truth conversation lines of large groups.
const MaxLine = 1 << 20

// ErrFormat is wrapped by every error about the content of a record.
var ErrFormat = errors.New("record: bad format")

// Header is the first line of every record.
type Header struct {
	V      int    // Version
	Schema string // SchemaObserver, SchemaNetwork or SchemaTruth
	// Start is the wall-clock time that "t" counts from (observer and
	// network records; zero in the ground truth).
	Start time.Time
	// Seed and Scenario name the run (ground truth only).
	Seed     int64
	Scenario string
}

type headerJSON struct {
	V        int    `json:"v"`
	Schema   string `json:"schema"`
	Start    string `json:"start,omitempty"`
	Seed     *int64 `json:"seed,omitempty"`
	Scenario string `json:"scenario,omitempty"`
}

func formatErr(line int, format string, args ...any) error {
	return fmt.Errorf("%w: line %d: %s", ErrFormat, line, fmt.Sprintf(format, args...))
}

// lines reads newline-terminated lines of at most MaxLine bytes.
type lines struct {
	br   *bufio.Reader
	line int
}

func newLines(r io.Reader) *lines {
	return &lines{br: bufio.NewReaderSize(r, MaxLine)}
}

// next returns the next line without its newline, or io.EOF. The slice is
// valid until the next call. A last line without a newline is accepted.
func (l *lines) next() ([]byte, error) {
	b, err := l.br.ReadSlice('\n')
	switch {
	case err == nil:
		l.line++
		return b[:len(b)-1], nil
	case errors.Is(err, bufio.ErrBufferFull):
		l.line++
		return nil, formatErr(l.line, "longer than %d bytes", MaxLine)
	case errors.Is(err, io.EOF):
		if len(b) == 0 {
			return nil, io.EOF
		}
		l.line++
		return b, nil
	default:
		return nil, fmt.Errorf("record: read line %d: %w", l.line+1, err)
	}
}

// strict decodes one JSON object into v, refusing unknown fields and
// anything after the object.
func strict(line int, b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return formatErr(line, "%v", err)
	}
	if d.More() {
		return formatErr(line, "more than one JSON value")
	}
	if _, err := d.Token(); err != io.EOF {
		return formatErr(line, "more than one JSON value")
	}
	return nil
}

func readHeader(l *lines, schema string) (Header, error) {
	b, err := l.next()
	if err == io.EOF {
		return Header{}, fmt.Errorf("%w: empty record, no header", ErrFormat)
	}
	if err != nil {
		return Header{}, err
	}
	var h headerJSON
	if err := strict(l.line, b, &h); err != nil {
		return Header{}, err
	}
	if h.V != Version {
		return Header{}, formatErr(l.line, "version %d, this reader reads version %d", h.V, Version)
	}
	if h.Schema != schema {
		return Header{}, formatErr(l.line, "schema %q, want %q", h.Schema, schema)
	}
	out := Header{V: h.V, Schema: h.Schema, Scenario: h.Scenario}
	if schema == SchemaTruth {
		if h.Seed == nil {
			return Header{}, formatErr(l.line, "ground truth header has no seed")
		}
		if h.Start != "" {
			return Header{}, formatErr(l.line, "ground truth header has a start")
		}
		out.Seed = *h.Seed
		return out, nil
	}
	if h.Seed != nil || h.Scenario != "" {
		return Header{}, formatErr(l.line, "%s header carries seed or scenario", schema)
	}
	if h.Start == "" {
		return Header{}, formatErr(l.line, "header has no start")
	}
	out.Start, err = time.Parse(time.RFC3339Nano, h.Start)
	if err != nil {
		return Header{}, formatErr(l.line, "start: %v", err)
	}
	return out, nil
}

// lineWriter writes a header and then one JSON object per line.
type lineWriter struct {
	mu  sync.Mutex
	bw  *bufio.Writer
	buf bytes.Buffer
	err error
}

func newLineWriter(w io.Writer, h headerJSON) (*lineWriter, error) {
	lw := &lineWriter{bw: bufio.NewWriter(w)}
	if err := lw.write(h); err != nil {
		return nil, err
	}
	return lw, nil
}

// write appends v as one line; call with mu held or before sharing.
func (w *lineWriter) write(v any) error {
	if w.err != nil {
		return w.err
	}
	w.buf.Reset()
	enc := json.NewEncoder(&w.buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil { // Encode appends the newline
		return fmt.Errorf("record: encode: %w", err)
	}
	if w.buf.Len() > MaxLine {
		return fmt.Errorf("%w: line of %d bytes exceeds %d", ErrFormat, w.buf.Len(), MaxLine)
	}
	if _, err := w.bw.Write(w.buf.Bytes()); err != nil {
		w.err = fmt.Errorf("record: write: %w", err)
		return w.err
	}
	return nil
}

func (w *lineWriter) flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	if err := w.bw.Flush(); err != nil {
		w.err = fmt.Errorf("record: flush: %w", err)
	}
	return w.err
}

func startString(start time.Time) string {
	return start.UTC().Format(time.RFC3339Nano)
}

// isHex reports whether s is non-empty lower-case hex of even length at
// most max characters.
func isHex(s string, max int) bool {
	if s == "" || len(s)%2 != 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// isName reports whether s is a non-empty printable ASCII name without
// spaces of at most max bytes (conn IDs, kinds, codes, user IDs).
func isName(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}
