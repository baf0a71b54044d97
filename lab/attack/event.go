package attack

import (
	"errors"
	"io"

	"github.com/quicprochat/qpc/lab/record"
)

// Event is one line of the observer record v1: lab/record's type
// (docs/research.md, "The observer record").
type Event = record.Event

// ReadObserver reads an observer record with lab/record's reader (which
// checks the schema, the version, every field and the time order) and
// calls fn for every event in order; the attacks are single-pass. Its
// errors for a bad record wrap record.ErrFormat.
func ReadObserver(r io.Reader, fn func(*Event) error) error {
	or, err := record.NewObserverReader(r)
	if err != nil {
		return err
	}
	for {
		e, err := or.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(&e); err != nil {
			return err
		}
	}
}
