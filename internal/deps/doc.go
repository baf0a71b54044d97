// Package deps holds the dependency policy's test: every module that
// go.mod requires must carry a license from the allowed list of
// CONTRIBUTING.md ("Dependencies"). It has no code; run
//
//	go test ./internal/deps
//
// It reads each module's license file from the module cache (go mod
// download fills it, offline once cached) and classifies the text.
package deps
