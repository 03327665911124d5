//go:build linux

package relay

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Sizes of the Linux listener's batches.
const (
	recvBatch  = 32          // messages per recvmmsg; with UDP GRO each holds up to 64 frames
	sendBatch  = 128         // messages per sendmmsg
	maxMessage = 1<<16 - 1   // largest UDP payload, and so largest GRO message
	sockBuf    = 7 << 20     // socket buffers, as wireguard-go asks for its own
	recvWakeup = time.Second // SO_RCVTIMEO: bounds how long Close waits for a reader
)

// Listener is a relay serving on a UDP port of its own (ListenUDP).
//
// On Linux it forwards without copying a byte in user space: each socket
// has UDP GRO on, so a burst one member sent arrives as one message of
// equal-size frames; their headers are rewritten where they lie and the
// message leaves again as one UDP GSO send. Each socket is read by a
// goroutine that blocks in recvmmsg on its own thread, so a burst costs one
// thread wakeup rather than a netpoller round (epoll, then a futex to hand
// the goroutine to another thread), which on a busy relay was a third of
// its CPU.
type Listener struct {
	s     *Server
	port  uint16
	fds   [2]int // IPv4, IPv6; -1 when absent
	noGSO atomic.Bool

	closed atomic.Bool
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error
}

// ListenUDP relays on UDP port (0: any free port) until Close.
func (s *Server) ListenUDP(port uint16) (*Listener, error) {
	l := &Listener{s: s, fds: [2]int{-1, -1}}
	var err error
	for range 10 { // with port 0, IPv6 may find IPv4's pick taken: try another
		if err = l.open(port); err == nil || port != 0 || !errors.Is(err, unix.EADDRINUSE) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	for _, fd := range l.fds {
		if fd >= 0 {
			l.wg.Add(1)
			go l.read(fd)
		}
	}
	return l, nil
}

func (l *Listener) open(port uint16) error {
	fd4, actual, err := l.socket(unix.AF_INET, port)
	if err != nil {
		return err
	}
	fd6, _, err := l.socket(unix.AF_INET6, actual)
	if errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.EADDRNOTAVAIL) {
		fd6, err = -1, nil // no IPv6 on this host
	}
	if err != nil {
		unix.Close(fd4)
		return err
	}
	l.fds, l.port = [2]int{fd4, fd6}, actual
	return nil
}

func (l *Listener) socket(family int, port uint16) (int, uint16, error) {
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, 0, fmt.Errorf("relay: listen on UDP port %d: socket: %w", port, err)
	}
	fail := func(step string, err error) (int, uint16, error) {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("relay: listen on UDP port %d: %s: %w", port, step, err)
	}
	var sa unix.Sockaddr = &unix.SockaddrInet4{Port: int(port)}
	if family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return fail("IPV6_V6ONLY", err)
		}
		sa = &unix.SockaddrInet6{Port: int(port)}
	}
	for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[0], sockBuf) != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[1], sockBuf) // capped by net.core.*mem_max
		}
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1) // without it frames arrive one by one
	tv := unix.NsecToTimeval(recvWakeup.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fail("SO_RCVTIMEO", err)
	}
	if l.s.mark != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(l.s.mark)); err != nil {
			return fail(fmt.Sprintf("mark the socket with %#x (needs CAP_NET_ADMIN)", l.s.mark), err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("relay: listen on UDP port %d: %w", port, err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	switch a := got.(type) {
	case *unix.SockaddrInet4:
		port = uint16(a.Port)
	case *unix.SockaddrInet6:
		port = uint16(a.Port)
	}
	return fd, port, nil
}

// Port is the UDP port the relay listens on.
func (l *Listener) Port() uint16 { return l.port }

// Close stops relaying and returns the first receive error, if any.
func (l *Listener) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	for _, fd := range l.fds {
		if fd >= 0 {
			_ = unix.Shutdown(fd, unix.SHUT_RD) // wakes the reader; SO_RCVTIMEO bounds it if not
		}
	}
	l.wg.Wait()
	for _, fd := range l.fds {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	return l.err
}

type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [4]byte
}

// sockaddr holds an IPv4 or IPv6 socket address in kernel layout.
type sockaddr [unix.SizeofSockaddrInet6]byte

func (sa *sockaddr) addrPort() netip.AddrPort {
	switch (*unix.RawSockaddr)(unsafe.Pointer(sa)).Family {
	case unix.AF_INET:
		r := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(r.Addr), portOf(r.Port))
	case unix.AF_INET6:
		r := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom16(r.Addr).Unmap(), portOf(r.Port))
	}
	return netip.AddrPort{}
}

// set stores a and returns the length to pass the kernel.
func (sa *sockaddr) set(a netip.AddrPort) uint32 {
	*sa = sockaddr{}
	p := a.Port()
	if a.Addr().Is4() {
		r := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		r.Family, r.Addr = unix.AF_INET, a.Addr().As4()
		*(*[2]byte)(unsafe.Pointer(&r.Port)) = [2]byte{byte(p >> 8), byte(p)}
		return unix.SizeofSockaddrInet4
	}
	r := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
	r.Family, r.Addr = unix.AF_INET6, a.Addr().As16()
	*(*[2]byte)(unsafe.Pointer(&r.Port)) = [2]byte{byte(p >> 8), byte(p)}
	return unix.SizeofSockaddrInet6
}

// portOf reads a port the kernel stored in network byte order.
func portOf(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}

var cmsgLen = unix.CmsgSpace(4)

// groSize returns the frame size of a coalesced message (0: not coalesced).
func groSize(oob []byte) int {
	for len(oob) >= unix.CmsgLen(0) {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		if h.Len < uint64(unix.CmsgLen(0)) || h.Len > uint64(len(oob)) {
			return 0
		}
		if h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO && h.Len >= uint64(unix.CmsgLen(4)) {
			return int(*(*int32)(unsafe.Pointer(&oob[unix.CmsgLen(0)])))
		}
		oob = oob[min(len(oob), unix.CmsgSpace(int(h.Len)-unix.CmsgLen(0))):]
	}
	return 0
}

// read relays what arrives on fd until Close.
func (l *Listener) read(fd int) {
	defer l.wg.Done()
	runtime.LockOSThread() // blocking recvmmsg: one thread, woken by the kernel
	defer runtime.UnlockOSThread()

	bufs := make([]byte, recvBatch*maxMessage)
	names := make([]sockaddr, recvBatch)
	oobs := make([]byte, recvBatch*cmsgLen)
	iovs := make([]unix.Iovec, recvBatch)
	msgs := make([]mmsghdr, recvBatch)
	for i := range msgs {
		iovs[i].Base = &bufs[i*maxMessage]
		iovs[i].SetLen(maxMessage)
		msgs[i].hdr.Iov = &iovs[i]
		msgs[i].hdr.SetIovlen(1)
		msgs[i].hdr.Name = &names[i][0]
		msgs[i].hdr.Control = &oobs[i*cmsgLen]
	}
	var out sender
	out.init(l)
	for {
		for i := range msgs {
			msgs[i].hdr.Namelen = uint32(len(names[i]))
			msgs[i].hdr.SetControllen(cmsgLen)
			msgs[i].hdr.Flags = 0
		}
		r, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])),
			uintptr(len(msgs)), unix.MSG_WAITFORONE, 0, 0)
		if l.closed.Load() {
			return
		}
		switch errno {
		case 0:
		case unix.EINTR, unix.EAGAIN: // EAGAIN: SO_RCVTIMEO passed with nothing to read
			continue
		default:
			l.mu.Lock()
			l.err = fmt.Errorf("relay: receive on UDP port %d: %w", l.port, errno)
			l.mu.Unlock()
			return
		}
		now := l.s.now()
		for i := range int(r) {
			m := &msgs[i]
			n := int(m.len)
			msg := bufs[i*maxMessage : i*maxMessage+n]
			from := names[i].addrPort()
			seg := groSize(oobs[i*cmsgLen : i*cmsgLen+int(m.hdr.Controllen)])
			if seg <= 0 || seg > n {
				seg = n
			}
			for off := 0; off < n; off += seg {
				frame := msg[off:min(off+seg, n)]
				if to, ok := l.s.routeAt(frame, from, now, &out); ok {
					out.add(frame, to)
				} else {
					out.cut()
				}
			}
			out.cut() // runs never span two received messages
		}
		out.flush()
	}
}

// sender gathers routed frames into runs (consecutive equal-size frames in
// one buffer, bound for one member) and sends each run as one UDP GSO
// message, many runs per sendmmsg.
type sender struct {
	l     *Listener
	runs  [2][]run // by family: IPv4, IPv6
	names [2][]sockaddr
	iovs  [2][]unix.Iovec
	oobs  [2][]byte
	msgs  [2][]mmsghdr
	open  bool // the last run can still grow
}

type run struct {
	buf  []byte
	seg  int // size of each frame but the last
	n    int // frames
	last int // size of the last frame
	to   netip.AddrPort
}

func (s *sender) init(l *Listener) {
	s.l = l
	for f := range s.runs {
		s.runs[f] = make([]run, 0, sendBatch)
		s.names[f] = make([]sockaddr, sendBatch)
		s.iovs[f] = make([]unix.Iovec, sendBatch)
		s.oobs[f] = make([]byte, sendBatch*unix.CmsgSpace(2))
		s.msgs[f] = make([]mmsghdr, sendBatch)
	}
}

func family(a netip.AddrPort) int {
	if a.Addr().Is4() {
		return 0
	}
	return 1
}

func (s *sender) add(frame []byte, to netip.AddrPort) {
	f := family(to)
	rs := s.runs[f]
	if s.open && len(rs) > 0 {
		r := &rs[len(rs)-1]
		// Contiguous, same destination, and every frame but the last of
		// the run the same size: what one GSO send can carry.
		if r.to == to && r.last == r.seg && len(frame) <= r.seg && r.n < 64 && !s.l.noGSO.Load() &&
			unsafe.Pointer(unsafe.SliceData(frame)) == unsafe.Add(unsafe.Pointer(unsafe.SliceData(r.buf)), len(r.buf)) {
			r.buf = r.buf[:len(r.buf)+len(frame)]
			r.n++
			r.last = len(frame)
			return
		}
	}
	if len(rs) == cap(rs) {
		s.flush()
		rs = s.runs[f]
	}
	s.runs[f] = append(rs, run{buf: frame, seg: len(frame), n: 1, last: len(frame), to: to})
	s.open = true
}

// cut ends the open run: the next frame is not contiguous with it.
func (s *sender) cut() { s.open = false }

func (s *sender) flush() {
	s.open = false
	for f := range s.runs {
		if len(s.runs[f]) > 0 {
			s.send(f)
			s.runs[f] = s.runs[f][:0]
		}
	}
}

func (s *sender) send(f int) {
	fd := s.l.fds[f]
	rs := s.runs[f]
	if fd < 0 {
		return // no socket of that family; registration could not have come from there
	}
	msgs := s.msgs[f]
	oobLen := unix.CmsgSpace(2)
	for i := range rs {
		r := &rs[i]
		m := &msgs[i]
		s.iovs[f][i].Base = &r.buf[0]
		s.iovs[f][i].SetLen(len(r.buf))
		m.hdr = unix.Msghdr{Iov: &s.iovs[f][i], Name: &s.names[f][i][0]}
		m.hdr.SetIovlen(1)
		m.hdr.Namelen = s.names[f][i].set(r.to)
		if r.n > 1 {
			oob := s.oobs[f][i*oobLen : (i+1)*oobLen]
			h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
			h.Level, h.Type = unix.IPPROTO_UDP, unix.UDP_SEGMENT
			h.SetLen(unix.CmsgLen(2))
			*(*uint16)(unsafe.Pointer(&oob[unix.CmsgLen(0)])) = uint16(r.seg)
			m.hdr.Control = &oob[0]
			m.hdr.SetControllen(oobLen)
		}
	}
	for sent, retries := 0, 0; sent < len(rs); {
		k, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[sent])),
			uintptr(len(rs)-sent), 0, 0, 0)
		switch {
		case errno == 0:
			sent += int(k)
		case errno == unix.EINTR && retries < 8:
			retries++
		case errno == unix.EIO && rs[sent].n > 1:
			// The route's device cannot checksum for GSO: send frames
			// one by one from now on, this run included.
			s.l.noGSO.Store(true)
			s.l.sendEach(fd, &rs[sent])
			sent++
		default:
			sent++ // that member's problem (unreachable, filtered): skip it
		}
	}
}

// sendEach sends r's frames one datagram each.
func (l *Listener) sendEach(fd int, r *run) {
	for off := 0; off < len(r.buf); off += r.seg {
		_ = l.sendTo(fd, r.buf[off:min(off+r.seg, len(r.buf))], r.to)
	}
}

func (l *Listener) sendTo(fd int, frame []byte, to netip.AddrPort) error {
	var sa unix.Sockaddr
	if to.Addr().Is4() {
		sa = &unix.SockaddrInet4{Addr: to.Addr().As4(), Port: int(to.Port())}
	} else {
		sa = &unix.SockaddrInet6{Addr: to.Addr().As16(), Port: int(to.Port())}
	}
	return unix.Sendto(fd, frame, 0, sa)
}

// WriteTo answers control frames (registrations) directly.
func (s *sender) WriteTo(frame []byte, to netip.AddrPort) error {
	to = unmap(to)
	fd := s.l.fds[family(to)]
	if fd < 0 {
		return fmt.Errorf("relay: no socket for %s", to)
	}
	return s.l.sendTo(fd, frame, to)
}
