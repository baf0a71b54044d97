package main

import (
	"path/filepath"
	"testing"
)

// TestDefaultHome: with neither --home nor QPC_HOME, the command (not the
// SDK) picks $XDG_DATA_HOME/qpc, else ~/.local/share/qpc.
func TestDefaultHome(t *testing.T) {
	t.Setenv("HOME", "/home/someone")
	if got, want := defaultHome(func(k string) string { return map[string]string{"XDG_DATA_HOME": "/data"}[k] }), filepath.Join("/data", "qpc"); got != want {
		t.Errorf("with XDG_DATA_HOME: %s, want %s", got, want)
	}
	if got, want := defaultHome(func(string) string { return "" }), filepath.Join("/home/someone", ".local", "share", "qpc"); got != want {
		t.Errorf("without: %s, want %s", got, want)
	}
}
