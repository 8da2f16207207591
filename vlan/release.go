package vlan

import "fmt"

// ReleasePort takes port out of bridge if it is one of its ports, whoever
// enslaved it: the loop probe's cut after the kernel fence (a bridge made
// behind the agent's back is not in the desired state, so Reconcile would
// never release it). It reports whether the port was released. A port
// that does not exist, or belongs to another master, is left alone.
func (d *DataPlane) ReleasePort(bridge, port string) (bool, error) {
	l, err := d.h.LinkByName(port)
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("release %s from %s: %w", port, bridge, err)
	}
	br, err := d.h.LinkByName(bridge)
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("release %s from %s: %w", port, bridge, err)
	}
	if l.Attrs().MasterIndex != br.Attrs().Index {
		return false, nil
	}
	if err := d.h.LinkSetNoMaster(l); err != nil {
		return false, fmt.Errorf("release %s from %s: %w", port, bridge, err)
	}
	return true, nil
}
