package vlan

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// LearnedMACs lists the unicast MACs the bridge has learned on one of its
// ports (bridgePort, e.g. the segment's VLAN side): dynamic FDB entries of
// the bridge (master), not the static ones an agent added, not the
// bridge's own (permanent) addresses, not the port device's own (self)
// list. A new active gateway announces these into the VXLAN side so the
// nodes relearn the legacy hosts behind it at once, instead of after
// their MAC ageing. The order is the kernel's.
func (d *DataPlane) LearnedMACs(bridgePort string) ([]net.HardwareAddr, error) {
	var ops opCount
	port, err := d.h.LinkByName(bridgePort)
	if err != nil {
		return nil, fmt.Errorf("learned MACs on %s: %w", bridgePort, err)
	}
	master := port.Attrs().MasterIndex
	if master == 0 {
		return nil, fmt.Errorf("learned MACs on %s: not a bridge port", bridgePort)
	}
	entries, err := retryDump(&ops, "fdb", func() ([]netlink.Neigh, error) {
		return d.h.NeighList(port.Attrs().Index, unix.AF_BRIDGE)
	})
	if err != nil {
		return nil, fmt.Errorf("learned MACs on %s: fdb dump: %w", bridgePort, err)
	}
	var out []net.HardwareAddr
	for _, e := range entries {
		if learnedOn(e, port.Attrs().Index, master) {
			out = append(out, append(net.HardwareAddr(nil), e.HardwareAddr...))
		}
	}
	return out, nil
}

func learnedOn(e netlink.Neigh, port, bridge int) bool {
	switch {
	case e.LinkIndex != port, e.MasterIndex != bridge, e.Flags&netlink.NTF_SELF != 0:
		return false
	case e.State&(netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0: // local or static
		return false
	case len(e.HardwareAddr) != 6 || e.HardwareAddr[0]&1 == 1 || isZeroMAC(e.HardwareAddr):
		return false
	}
	return true
}
