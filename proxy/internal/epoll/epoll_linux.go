//go:build linux

package epoll

import (
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"
)

// Event is one readiness report.
type Event = syscall.EpollEvent

// Interest and readiness bits. Err is reported whatever the interest; RdHup (the peer sent its FIN) only to an
// interest that asks for it.
const (
	In    = syscall.EPOLLIN
	Out   = syscall.EPOLLOUT
	Err   = syscall.EPOLLERR | syscall.EPOLLHUP
	RdHup = syscall.EPOLLRDHUP
)

// Poller is a level-triggered epoll set and the eventfd that wakes it.
type Poller struct {
	fd   int
	file *os.File        // fd, registered with the Go poller
	raw  syscall.RawConn // file's, to wait for fd to be readable
	wake int             // eventfd
}

// New makes an epoll set with its wake-up eventfd in it, registered with the Go poller.
func New() (*Poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	// The syscall package has no eventfd wrapper; EFD_CLOEXEC|EFD_NONBLOCK are O_CLOEXEC|O_NONBLOCK on Linux.
	r, _, errno := syscall.Syscall(syscall.SYS_EVENTFD2, 0, syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if errno != 0 {
		_ = syscall.Close(epfd)
		return nil, fmt.Errorf("eventfd2: %w", errno)
	}
	wakefd := int(r)
	ev := syscall.EpollEvent{Events: In, Fd: int32(wakefd)}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		_ = syscall.Close(epfd)
		_ = syscall.Close(wakefd)
		return nil, fmt.Errorf("epoll_ctl eventfd: %w", err)
	}
	// Hand epfd to the Go poller (see Serve). os.NewFile registers a non-blocking descriptor with it; a deadline
	// call tells whether that worked, since it fails on a file the poller does not hold.
	if err := syscall.SetNonblock(epfd, true); err != nil {
		_ = syscall.Close(epfd)
		_ = syscall.Close(wakefd)
		return nil, fmt.Errorf("epoll descriptor: %w", err)
	}
	f := os.NewFile(uintptr(epfd), "epoll")
	raw, err := f.SyscallConn()
	if err == nil {
		err = f.SetReadDeadline(time.Time{})
	}
	if err != nil {
		_ = f.Close()
		_ = syscall.Close(wakefd)
		return nil, fmt.Errorf("epoll descriptor not pollable: %w", err)
	}
	return &Poller{fd: epfd, file: f, raw: raw, wake: wakefd}, nil
}

// Close closes the set (taking it out of the Go poller) and the eventfd.
func (p *Poller) Close() {
	_ = p.file.Close()
	_ = syscall.Close(p.wake)
}

// Wake makes the set readable until ClearWake. Any goroutine may call it.
func (p *Poller) Wake() {
	one := [8]byte{1}
	// EAGAIN means the counter is already non-zero: the poller is woken anyway.
	_, _ = syscall.Write(p.wake, one[:])
}

// IsWake says whether a reported descriptor is the wake-up eventfd.
func (p *Poller) IsWake(fd int) bool { return fd == p.wake }

// ClearWake resets the wake-up counter.
func (p *Poller) ClearWake() {
	var cnt [8]byte
	_, _ = syscall.Read(p.wake, cnt[:])
}

// Set changes fd's interest from have to want: added when it had none, removed when it wants none.
func (p *Poller) Set(fd int, have, want uint32) error {
	op := syscall.EPOLL_CTL_MOD
	switch {
	case want == 0:
		op = syscall.EPOLL_CTL_DEL
	case have == 0:
		op = syscall.EPOLL_CTL_ADD
	}
	ev := syscall.EpollEvent{Events: want, Fd: int32(fd)}
	if err := syscall.EpollCtl(p.fd, op, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

// Serve hands every batch of ready events to batch until it returns stop, or polling fails (only a bug, a bad
// descriptor, gets there: the error says so). batch also says whether it left a descriptor ready (more: say, a
// socket it stopped reading before it was drained); when it did not, and the batch did not fill events, nothing
// is ready that will not wake the poller anew, so Serve parks without polling again first.
//
// It never blocks in epoll_wait. A goroutine blocked in a system call makes the runtime's monitor take its P away
// after 20µs and start another thread for it, and keeps the monitor polling every 20µs: measured under `make bench`
// that was 4,000 nanosleeps and 1,700 futex calls a second, more system calls than the forwarding itself. Instead
// the epoll descriptor is itself registered with the Go poller (an epoll descriptor is readable while it has
// events): Serve drains it with non-blocking epoll_wait calls and, when nothing is ready, parks like any goroutine
// waiting on a socket. Events that arrive between the last poll and parking are not lost: they make the
// descriptor readable, which wakes the parked goroutine (at once, if they came before it parked). That holds for
// every new readiness, but not for what a level-triggered set reports again because it is still ready (a socket
// not read to its end, a FIN behind the data a short read took, an epoll_ctl on a descriptor already reported);
// hence more. Under load most batches end with the set drained, and each of them was followed by an empty poll.
func (p *Poller) Serve(events []Event, batch func(ready []Event) (stop, more bool)) error {
	var pollErr error
	err := p.raw.Read(func(uintptr) bool {
		for {
			n, errno := pollNow(p.fd, events)
			if errno != 0 {
				if errno == syscall.EINTR {
					continue
				}
				pollErr = fmt.Errorf("epoll_wait: %w", errno)
				return true
			}
			if n == 0 {
				return false // nothing ready: park until the descriptor is readable
			}
			stop, more := batch(events[:n])
			if stop {
				return true
			}
			if !more && n < len(events) {
				return false // drained: park until the descriptor is readable
			}
		}
	})
	if pollErr != nil {
		return pollErr
	}
	if err != nil {
		return fmt.Errorf("epoll poller: %w", err)
	}
	return nil
}

// Dup duplicates the descriptor under a connection. The duplicate shares the open file (and so O_NONBLOCK and the
// socket options already set) and is close-on-exec.
func Dup(sc syscall.Conn) (int, error) {
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_DUPFD_CLOEXEC, 0)
		if errno != 0 {
			derr = errno
			return
		}
		nfd = int(r)
	}); err != nil {
		return -1, err
	}
	return nfd, derr
}

// ShutdownWrite sends fd's FIN.
func ShutdownWrite(fd int) error { return syscall.Shutdown(fd, syscall.SHUT_WR) }

// Close closes a descriptor the caller owns.
func Close(fd int) error { return syscall.Close(fd) }

// A loop's reads, writes and zero-timeout epoll_waits are raw system calls, without the runtime's entersyscall and
// exitsyscall around them. None of them can block (every descriptor is non-blocking), and that bookkeeping is not
// free: entersyscall wakes the runtime's monitor thread (sysmon) whenever the process was idle, and a woken sysmon
// polls every 20µs for the next millisecond or more. RPC traffic goes idle between messages, so that happened
// all the time: about 2,600 nanosleeps a second under make bench, a tenth of the proxy's CPU. The price is that the
// P is not released during the call, which for a call that does not sleep is what we want anyway.

// Read is read(2) on a non-blocking descriptor. p must not be empty.
func Read(fd int, p []byte) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), 0
}

// Write is write(2) on a non-blocking socket. p must not be empty. (A peer that is gone gives EPIPE and a
// SIGPIPE, which the Go runtime ignores for descriptors other than 1 and 2.)
func Write(fd int, p []byte) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), 0
}

// pollNow is epoll_pwait(2) with a zero timeout and no signal mask (so epoll_wait, which arm64 lacks): the events
// ready now, never a wait.
func pollNow(epfd int, events []Event) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(unsafe.SliceData(events))), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), 0
}
