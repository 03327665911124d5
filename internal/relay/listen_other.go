//go:build !linux

package relay

import "golang.zx2c4.com/wireguard/conn"

// Listener is a relay serving on a UDP port of its own (ListenUDP). Off
// Linux it is Serve on wireguard-go's standard Bind.
type Listener struct {
	bind conn.Bind
	port uint16
	wait func() error
}

// ListenUDP relays on UDP port (0: any free port) until Close.
func (s *Server) ListenUDP(port uint16) (*Listener, error) {
	b := conn.NewDefaultBind()
	actual, wait, err := s.Serve(b, port)
	if err != nil {
		return nil, err
	}
	return &Listener{bind: b, port: actual, wait: wait}, nil
}

// Port is the UDP port the relay listens on.
func (l *Listener) Port() uint16 { return l.port }

// Close stops relaying and returns the first receive error, if any.
func (l *Listener) Close() error {
	l.bind.Close()
	return l.wait()
}
