package kt

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Backup copies the directory's state (the database and the epoch log) to
// dir while it runs: no epoch is built during the copy, so the copy holds
// exactly the epochs committed and logged so far, and OpenDirectory opens
// it as it would the original. dir must not hold a directory already.
func (d *Directory) Backup(dir string) error {
	if d.closed.Load() {
		return ErrClosed
	}
	d.writeMu.Lock()
	defer d.writeMu.Unlock()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("kt: backup: %w", err)
	}
	bt, ok := d.store.(*boltTree)
	if !ok {
		return errors.New("kt: backup: the tree is not in the bbolt file (DirectoryOptions.Tree): back up its store instead")
	}
	if err := bt.backup(filepath.Join(dir, DBFile)); err != nil {
		return fmt.Errorf("kt: backup: database: %w", err)
	}
	p, ok := d.log.driver.(*posixLog)
	if !ok {
		return errors.New("kt: backup: the epoch log is not in files (DirectoryOptions.OpenLog): back up its store instead")
	}
	if err := copyTree(p.dir, filepath.Join(dir, LogDir)); err != nil {
		return fmt.Errorf("kt: backup: log: %w", err)
	}
	return nil
}

// copyTree copies the regular files and folders below from to to.
func copyTree(from, to string) error {
	return filepath.WalkDir(from, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(from, path)
		if err != nil {
			return err
		}
		dst := filepath.Join(to, rel)
		if e.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		if !e.Type().IsRegular() {
			return nil
		}
		src, err := os.Open(path)
		if err != nil {
			return err
		}
		defer src.Close()
		out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, src); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
}
