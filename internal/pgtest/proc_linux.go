package pgtest

import (
	"errors"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// unprivileged returns the process attributes under which initdb and
// postgres run: as root (initdb refuses root), those of the postgres user,
// or nobody; otherwise the caller's own, uid -1. The cluster dies with
// the test binary (Pdeathsig) should Main never stop it.
func unprivileged() (attr func() *syscall.SysProcAttr, uid, gid int, err error) {
	if os.Geteuid() != 0 {
		return func() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }, -1, -1, nil
	}
	var u *user.User
	for _, name := range []string{"postgres", "nobody"} {
		if u, err = user.Lookup(name); err == nil {
			break
		}
	}
	if u == nil {
		return nil, 0, 0, errors.New("running as root, and neither a postgres nor a nobody user exists to run initdb as")
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return func() *syscall.SysProcAttr {
		return &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true},
			Pdeathsig:  syscall.SIGKILL,
		}
	}, uid, gid, nil
}
