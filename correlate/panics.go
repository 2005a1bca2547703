package correlate

import (
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync/atomic"
)

// PanicGuard is what every goroutine that handles wire-derived data defers around the unit of work it can afford
// to lose (one record, one event, one batch): a bug that some byte sequence triggers then costs that unit, counted,
// instead of the process and with it every connection it forwards. A proxy in front of a cloud's message bus must
// not be killable by what a client sends, so the pumps, the correlator, the sinks and the exporters all use one.
//
// The zero value is not usable: build one with NewPanicGuard. It is safe for concurrent use.
type PanicGuard struct {
	component string
	log       *slog.Logger
	n         atomic.Uint64
	logged    atomic.Bool
}

// NewPanicGuard returns a guard for one component (the value of amqptrace_panics_total's component label). A nil
// log discards.
func NewPanicGuard(component string, log *slog.Logger) *PanicGuard {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &PanicGuard{component: component, log: log}
}

// Recover must be deferred directly (defer g.Recover(&dropped)): it stops a panic, counts it, adds one to dropped
// when dropped is not nil, and logs the first panic of the component. The log line names the panic's type and
// where it happened, never its value: panic values here are built from wire data (a label value, a payload) and
// may hold secrets or bytes that are not text.
func (g *PanicGuard) Recover(dropped *atomic.Uint64) {
	v := recover()
	if v == nil {
		return
	}
	if dropped != nil {
		dropped.Add(1)
	}
	g.Caught(v)
}

// Caught counts a panic value that the caller recovered itself (where it must look at the value first, as an HTTP
// handler does for http.ErrAbortHandler), and logs the component's first one like Recover.
func (g *PanicGuard) Caught(v any) {
	g.n.Add(1)
	if g.logged.CompareAndSwap(false, true) {
		g.log.Error("panic recovered; the unit of work is dropped and counted (amqptrace_panics_total), later ones are not logged",
			"component", g.component, "panic_type", fmt.Sprintf("%T", v), "where", panicSite())
	}
}

// Component returns the guard's component name.
func (g *PanicGuard) Component() string { return g.component }

// Count returns how many panics the guard recovered.
func (g *PanicGuard) Count() uint64 { return g.n.Load() }

// panicSite returns the function and line that panicked, and up to three callers, without argument values.
func panicSite() string {
	pcs := make([]uintptr, 32)
	// Skip runtime.Callers and panicSite; what follows is Caught, perhaps Recover or a deferred closure, the panic
	// machinery (runtime.*), and then the code that panicked.
	n := runtime.Callers(2, pcs)
	frames := runtime.CallersFrames(pcs[:n])
	var out []string
	seenPanic := false
	for {
		f, more := frames.Next()
		if strings.HasPrefix(f.Function, "runtime.") {
			seenPanic = true
		} else if seenPanic {
			out = append(out, fmt.Sprintf("%s (%s:%d)", f.Function, trimPath(f.File), f.Line))
			if len(out) == 4 {
				break
			}
		}
		if !more {
			break
		}
	}
	return strings.Join(out, " < ")
}

// trimPath keeps the last two elements of a source path: enough to find the line, without the build machine's layout.
func trimPath(p string) string {
	if i := strings.LastIndexByte(p, '/'); i > 0 {
		if j := strings.LastIndexByte(p[:i], '/'); j >= 0 {
			return p[j+1:]
		}
	}
	return p
}
