//go:build !linux

package pgtest

import (
	"errors"
	"os"
	"syscall"
)

// unprivileged: outside Linux the cluster runs as the caller, who must
// not be root (initdb refuses it).
func unprivileged() (attr func() *syscall.SysProcAttr, uid, gid int, err error) {
	if os.Geteuid() == 0 {
		return nil, 0, 0, errors.New("running as root: initdb refuses it; set QPC_TEST_POSTGRES or run the tests as another user")
	}
	return func() *syscall.SysProcAttr { return nil }, -1, -1, nil
}
