package main

import (
	"bytes"
	"log/slog"
	"os"
	"testing"
)

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func testLogger(t *testing.T) *slog.Logger { return slog.New(slog.NewTextHandler(testWriter{t}, nil)) }

func pidSelf(t *testing.T) int {
	t.Helper()
	return os.Getpid()
}
