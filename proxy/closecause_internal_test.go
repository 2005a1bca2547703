package proxy

import (
	"errors"
	"testing"
)

// One close cause for both engines: the first wins, and a cause the proxy imposes replaces only a clean EOF.
func TestCloseCause(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name   string
		steps  func(cc *closeCause)
		reason CloseReason
		err    error
	}{
		{"eof, then an error: the EOF came first", func(cc *closeCause) {
			cc.eof(clientToServer)
			cc.failure(ReasonUpstreamError, boom)
		}, ReasonClientClosed, nil},
		{"an error, then an EOF", func(cc *closeCause) {
			cc.failure(ReasonUpstreamError, boom)
			cc.eof(serverToClient)
		}, ReasonUpstreamError, boom},
		{"eof, then the idle timeout: the timeout says more", func(cc *closeCause) {
			cc.eof(serverToClient)
			cc.imposed(ReasonIdleTimeout, ErrIdleTimeout)
		}, ReasonIdleTimeout, ErrIdleTimeout},
		{"an error, then shutdown: the error stays", func(cc *closeCause) {
			cc.failure(ReasonUpstreamError, boom)
			cc.imposed(ReasonHalfCloseTimeout, ErrHalfCloseTimeout)
		}, ReasonUpstreamError, boom},
	} {
		var cc closeCause
		tc.steps(&cc)
		if cc.reason != tc.reason || cc.err != tc.err {
			t.Errorf("%s: reason %q err %v, want %q %v", tc.name, cc.reason, cc.err, tc.reason, tc.err)
		}
	}
}
