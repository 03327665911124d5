//go:build !linux

package agent

// releaseBinaryPages is Linux-only (see pages_linux.go).
func releaseBinaryPages() {}
