// Package pgtest gives tests a fresh, empty PostgreSQL namespace on a
// real server: never a mock.
//
// Call Main from the package's TestMain first, then DB from each test
// that needs a database:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
//	func TestX(t *testing.T) {
//		url := pgtest.DB(t) // a new, empty schema, dropped when t ends
//		...
//	}
//
// Where the server comes from, in order:
//
//  1. QPC_TEST_POSTGRES, a URL of a server on which the URL's user may
//     CREATE DATABASE (postgres://user@host:port/db?sslmode=disable).
//  2. PostgreSQL's binaries (pg_config --bindir, else the newest
//     /usr/lib/postgresql/*/bin): the package starts a throwaway cluster
//     of its own in a temporary directory, listening on 127.0.0.1 on a
//     free port, with trust authentication. Its fsync is on when the
//     binary runs benchmarks (-test.bench), which must measure real
//     commits, and off for tests, which test what a commit means rather
//     than whether it survives a power cut. It is started by the first DB call
//     of the test binary, shared by all its tests and stopped by Main.
//     initdb refuses to run as root, so as root the cluster runs as the
//     postgres user (or nobody when there is none).
//  3. Nothing: DB fails the test under CI=true, saying what is missing,
//     and skips it otherwise, with the same message.
package pgtest
