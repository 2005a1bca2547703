//go:build !linux

package proxy

import "errors"

// Event loops are Linux-only (epoll); elsewhere every connection is forwarded by the goroutine pumps.

type loop struct{}

type loopConn struct {
	l *loop
}

func startLoops(*Proxy, int) ([]*loop, error) {
	return nil, errors.New("event loops need Linux")
}

func stopLoops([]*loop) {}

func (l *loop) post(func()) {}

func (lc *loopConn) abort() {}

func (c *conn) handOff(*loop, func()) *loopConn { return nil }
