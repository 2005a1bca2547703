// Package epoll is the Linux system calls under the proxy's event loops: an epoll set with an eventfd to wake it,
// registered with the Go poller so that the loop goroutine parks like any goroutine waiting on a socket, and the
// raw read, write and close of the descriptors the loops own. The loops themselves (proxy/eventloop_linux.go) are
// forwarding policy; what a system call costs and how it is made lives here.
//
// On other systems it is empty: the proxy forwards with goroutine pumps there.
package epoll
