// Package e2e holds the integration tests that need both a real server and
// the real client: it starts qpc servers on 127.0.0.1 with bbolt stores in
// temporary directories and drives them through the client SDK. It has no
// non-test code besides this comment.
package e2e
