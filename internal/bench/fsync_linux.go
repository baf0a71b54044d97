package bench

import (
	"os"
	"syscall"
)

// datasync is what bbolt and the store's key-slot file call at a commit on
// Linux.
func datasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
