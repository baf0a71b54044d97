package secretfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Mode is the permission of every file Create writes: the owner alone
// reads it.
const Mode fs.FileMode = 0o600

// Create writes data to a new file at path with mode 0600, atomically and
// durably. If anything exists at path — a file, a directory or a symbolic
// link, even a dangling one — it changes nothing and returns an error
// wrapping fs.ErrExist. The error names the path.
//
// The file is written under a temporary name in path's directory, synced,
// and then hard-linked to path: link(2) fails when the new name exists and
// does not follow a symbolic link there, which makes it the no-replace
// form of rename. Two concurrent Creates of one path leave exactly one
// file, whole, and one fs.ErrExist.
func Create(path string, data []byte) (err error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("create %s: %w (a symbolic link; refusing to follow it)", path, fs.ErrExist)
		}
		return fmt.Errorf("create %s: %w", path, fs.ErrExist)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // the link keeps the data; the temporary name goes
	// CreateTemp makes the file 0600 today; the Chmod makes the mode a
	// property of this code, whatever the umask or a future CreateTemp.
	werr := tmp.Chmod(Mode)
	if werr == nil {
		_, werr = tmp.Write(data)
	}
	if werr == nil {
		werr = tmp.Sync()
	}
	if err := errors.Join(werr, tmp.Close()); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		var le *os.LinkError
		if errors.As(err, &le) && errors.Is(le.Err, fs.ErrExist) {
			return fmt.Errorf("create %s: %w", path, fs.ErrExist)
		}
		return fmt.Errorf("create %s: %w", path, err)
	}
	// The new directory entry must survive a crash as well as the data.
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("create %s: sync directory: %w", path, err)
	}
	if err := errors.Join(d.Sync(), d.Close()); err != nil {
		return fmt.Errorf("create %s: sync directory: %w", path, err)
	}
	return nil
}
