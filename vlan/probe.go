package vlan

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
)

// Capabilities are the kernel features the data plane uses.
type Capabilities struct {
	Bridge, VXLAN, VLAN bool
}

// Missing names, in one error, each feature the segments need and the
// kernel lacks (nil when nothing is missing).
func (c Capabilities) Missing(segs []Segment) error {
	var errs []error
	if !c.Bridge {
		errs = append(errs, &MissingFeatureError{Feature: featBridge, Module: "bridge"})
	}
	if !c.VXLAN {
		errs = append(errs, &MissingFeatureError{Feature: featVXLAN, Module: "vxlan"})
	}
	if !c.VLAN {
		for _, s := range segs {
			if s.Uplink != "" && !s.Access {
				errs = append(errs, &MissingFeatureError{Feature: featVLAN, Module: "8021q"})
				break
			}
		}
	}
	return errors.Join(errs...)
}

// Probe finds out which link kinds the kernel can create, by creating a
// throw-away bridge, an 802.1Q sub-interface on it and a VXLAN device, and
// deleting them. Asking the kernel is the only reliable test: modules load
// on demand, so /proc/net/vlan may be absent on a kernel that has 8021q.
func (d *DataPlane) Probe() (Capabilities, error) {
	var c Capabilities
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return c, fmt.Errorf("probe name: %w", err)
	}
	suffix := hex.EncodeToString(b[:])
	// "nb-p?-" names are outside the segment name space: never adopted.
	names := []string{"nb-pb-" + suffix, "nb-pv-" + suffix, "nb-px-" + suffix}
	defer func() {
		for _, n := range names {
			if l, err := d.h.LinkByName(n); err == nil {
				if err := d.h.LinkDel(l); err != nil {
					d.log.Warn("probe link left behind", zap.String("link", n), zap.Error(err))
				}
			}
		}
	}()
	attrs := func(name string) netlink.LinkAttrs {
		a := netlink.NewLinkAttrs()
		a.Name = name
		return a
	}
	try := func(l netlink.Link) (bool, error) {
		err := featureErr(d.h.LinkAdd(l), "", "")
		var mf *MissingFeatureError
		if errors.As(err, &mf) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("probe %s: %w", l.Attrs().Name, err)
		}
		return true, nil
	}
	var err error
	if c.Bridge, err = try(&netlink.Bridge{LinkAttrs: attrs(names[0])}); err != nil {
		return c, err
	}
	if c.Bridge {
		br, err := d.h.LinkByName(names[0])
		if err != nil {
			return c, fmt.Errorf("probe: find %s: %w", names[0], err)
		}
		va := attrs(names[1])
		va.ParentIndex = br.Attrs().Index
		if c.VLAN, err = try(&netlink.Vlan{LinkAttrs: va, VlanId: 1}); err != nil {
			return c, err
		}
	}
	c.VXLAN, err = try(&netlink.Vxlan{LinkAttrs: attrs(names[2]), VxlanId: 1, Port: DefaultVXLANPort})
	return c, err
}
