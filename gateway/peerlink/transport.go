package peerlink

import (
	"net"
	"net/netip"

	"github.com/hashicorp/memberlist"
)

// filterTransport is memberlist's own UDP/TCP transport with a source
// filter in front: packets and streams from an address that is no
// configured peer are dropped before memberlist decrypts or parses them.
// memberlist's CIDRsAllowed cannot do this: it is fixed at Create (peers
// change at runtime) and is not applied to user messages.
type filterTransport struct {
	*memberlist.NetTransport
	allowed func(netip.Addr) bool
	dropped func(reason string)

	packets   chan *memberlist.Packet
	streams   chan net.Conn
	stop      chan struct{} // closed when Shutdown starts
	innerDone chan struct{} // closed when the inner transport has stopped
}

var _ memberlist.NodeAwareTransport = (*filterTransport)(nil)

func newFilterTransport(inner *memberlist.NetTransport, allowed func(netip.Addr) bool, dropped func(string)) *filterTransport {
	t := &filterTransport{NetTransport: inner, allowed: allowed, dropped: dropped,
		packets: make(chan *memberlist.Packet), streams: make(chan net.Conn),
		stop: make(chan struct{}), innerDone: make(chan struct{})}
	go t.forwardPackets()
	go t.forwardStreams()
	return t
}

func (t *filterTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }
func (t *filterTransport) StreamCh() <-chan net.Conn           { return t.streams }

// Shutdown keeps draining the inner transport until its listeners are
// gone: they block on an unread channel otherwise.
func (t *filterTransport) Shutdown() error {
	close(t.stop)
	err := t.NetTransport.Shutdown()
	close(t.innerDone)
	return err
}

func (t *filterTransport) forwardPackets() {
	for {
		select {
		case p := <-t.NetTransport.PacketCh():
			if !t.allowed(sourceIP(p.From)) {
				t.dropped(DropUnknownAddr)
				continue
			}
			select {
			case t.packets <- p:
			case <-t.stop:
			}
		case <-t.innerDone:
			return
		}
	}
}

func (t *filterTransport) forwardStreams() {
	for {
		select {
		case c := <-t.NetTransport.StreamCh():
			if !t.allowed(sourceIP(c.RemoteAddr())) {
				t.dropped(DropUnknownAddr)
				_ = c.Close()
				continue
			}
			select {
			case t.streams <- c:
			case <-t.stop:
				_ = c.Close()
			}
		case <-t.innerDone:
			return
		}
	}
}

func sourceIP(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr()
	case *net.TCPAddr:
		return a.AddrPort().Addr()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}
