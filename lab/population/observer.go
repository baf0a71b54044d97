package population

import (
	"io"

	"github.com/quicprochat/qpc/server"
)

// setObserver turns the server's observer record on, written to w, and
// returns it so that the run can flush it after the server's shutdown.
func setObserver(so *server.Options, w io.Writer) (*server.Observer, error) {
	if w == nil {
		return nil, nil
	}
	o, err := server.NewObserver(w)
	if err != nil {
		return nil, err
	}
	so.Observer = o
	return o, nil
}
