// Package secretfile writes the files that hold secrets: the server's TLS,
// token, key-transparency and onion keys, the witness key, the onion
// service's client list.
//
// Call Create once per file. It never overwrites and never follows a
// symbolic link at the path: a key that every client pins, or a secret
// that tokens already issued depend on, must not be replaced by a second
// start or redirected into a file an attacker chose. The file appears
// whole or not at all (a temporary file in the same directory, synced,
// then linked into place), with mode 0600, and the directory entry is
// synced too, so a crash right after Create returns cannot lose it.
//
// It imports only the standard library, so every room may use it.
package secretfile
