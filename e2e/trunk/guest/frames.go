package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netbridge-io/netbridge/internal/netnstest"
)

// markerType is the EtherType of the test frames (IEEE local experimental 2;
// experimental 1, 0x88b5, is the loop probe's),
// so no protocol stack in the guest reacts to them.
const markerType = 0x88b6

// tag is one VLAN header: its TPID (0x8100 or 0x88a8) and TCI.
type tag struct{ tpid, tci uint16 }

// broadcastFrame builds a broadcast frame from src with the given tags
// (outermost first) whose payload is marker.
func broadcastFrame(src net.HardwareAddr, marker string, tags ...tag) []byte {
	var b bytes.Buffer
	b.Write([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	b.Write(src)
	for _, t := range tags {
		_ = binary.Write(&b, binary.BigEndian, t.tpid)
		_ = binary.Write(&b, binary.BigEndian, t.tci)
	}
	_ = binary.Write(&b, binary.BigEndian, uint16(markerType))
	b.WriteString(marker)
	for b.Len() < 60 {
		b.WriteByte(0)
	}
	return b.Bytes()
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// rawSocket opens an AF_PACKET socket bound to iface inside ns (the socket
// keeps its namespace; reading and writing work from any thread).
func rawSocket(ns *netnstest.NS, iface string) (fd, ifindex int, err error) {
	err = ns.Do(func() error {
		ifi, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		ifindex = ifi.Index
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind %s: %w", iface, err)
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("%s/%s: %w", ns.Name, iface, err)
	}
	return fd, ifindex, nil
}

// send writes frame out of iface in ns, count times.
func send(ns *netnstest.NS, iface string, frame []byte, count int) error {
	fd, ifindex, err := rawSocket(ns, iface)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for i := 0; i < count; i++ {
		if err := unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifindex, Halen: 6}); err != nil {
			return fmt.Errorf("send on %s/%s: %w", ns.Name, iface, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// capture records the frames arriving on one interface from the moment it
// is opened.
type capture struct {
	where string
	fd    int
	// outgoing: count the frames the interface sends too (a trace along
	// the path), not only those it receives.
	outgoing bool
}

func openCapture(ns *netnstest.NS, iface string) (*capture, error) {
	fd, _, err := rawSocket(ns, iface)
	if err != nil {
		return nil, err
	}
	tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &capture{where: ns.Name + "/" + iface, fd: fd}, nil
}

// count reads until the deadline, and after it what is still queued (the
// captures are read one after the other against one deadline), and returns
// how many received frames (PACKET_OUTGOING excluded) carry marker.
func (c *capture) count(marker string, until time.Time) int {
	buf := make([]byte, 65536)
	n := 0
	hardStop := until.Add(2 * time.Second) // a chatty interface never goes quiet
	for {
		l, from, err := unix.Recvfrom(c.fd, buf, 0)
		if err == nil {
			ll, ok := from.(*unix.SockaddrLinklayer)
			out := ok && ll.Pkttype == unix.PACKET_OUTGOING
			if (c.outgoing || !out) && bytes.Contains(buf[:l], []byte(marker)) {
				n++
			}
		}
		now := time.Now()
		// Past the deadline: stop at the first empty read (the queue is
		// drained), not at the first frame.
		if (err != nil && now.After(until)) || now.After(hardStop) {
			return n
		}
	}
}

func (c *capture) close() { unix.Close(c.fd) }

// expectFrames sends with emit while capturing on every place of want and
// checks how many marker frames each saw: want[place] > 0 means at least
// that many, 0 means none.
func expectFrames(marker string, emit func() error, want map[*capture]int, window time.Duration) error {
	if err := emit(); err != nil {
		return err
	}
	until := time.Now().Add(window)
	var errs []string
	for c, w := range want {
		got := c.count(marker, until)
		switch {
		case w == 0 && got != 0:
			errs = append(errs, fmt.Sprintf("%s saw %d %q frames, want none", c.where, got, marker))
		case w > 0 && got < w:
			errs = append(errs, fmt.Sprintf("%s saw %d %q frames, want at least %d", c.where, got, marker, w))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%v", errs)
	}
	return nil
}
