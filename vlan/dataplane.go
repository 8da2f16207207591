package vlan

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// RouteProtocol marks the host routes this package installs (rtm_protocol);
// `ip route show proto 78` lists them. Routes of other protocols are never
// touched.
const RouteProtocol = 78

// DataPlane programs segments into one network namespace. It holds no
// state between calls: every Reconcile reads the kernel again, so a
// restarted agent adopts what it finds.
type DataPlane struct {
	h   *netlink.Handle
	log *zap.Logger
	// ns is the namespace h works in, for subscriptions (WatchDrift);
	// nil means the caller's own namespace.
	ns *netns.NsHandle
	// ownHandle: h was opened by NewAt and is closed by Close.
	ownHandle bool
	// driftTuning is for tests only (see WatchDrift).
	driftTuning driftTuning
}

// New returns a DataPlane that works through h:
// netlink.NewHandle(unix.NETLINK_ROUTE) for the current namespace,
// netlink.NewHandleAt(ns, unix.NETLINK_ROUTE) for another (without the
// family argument the library also opens XFRM sockets, which fails on
// kernels without xfrm). The caller keeps ownership of h (and closes it).
// WatchDrift on such a DataPlane subscribes in the process's namespace:
// use NewAt for another namespace.
func New(h *netlink.Handle, log *zap.Logger) *DataPlane {
	return &DataPlane{h: h, log: log}
}

// NewAt returns a DataPlane working in the network namespace ns: it opens
// its own netlink handle there (closed by Close) and WatchDrift subscribes
// in that namespace. The caller keeps ownership of ns and must keep it
// open until Close. Use New for the agent's own namespace.
func NewAt(ns netns.NsHandle, log *zap.Logger) (*DataPlane, error) {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in namespace %s: %w", ns, err)
	}
	return &DataPlane{h: h, log: log, ns: &ns, ownHandle: true}, nil
}

// Close releases the netlink handle NewAt opened; it does nothing for a
// DataPlane made by New, whose handle belongs to the caller.
func (d *DataPlane) Close() {
	if d.ownHandle {
		d.h.Close()
	}
}

// opCount counts the netlink requests of one Reconcile, so that benchmarks
// and logs can show what a resync costs the kernel.
type opCount struct {
	reads, writes int
}

// Result says what one Reconcile did.
type Result struct {
	// Changes is the number of netlink changes applied (0: nothing to do).
	Changes int
	// Segments maps each desired VNI to nil (programmed) or why it is not.
	Segments map[uint32]error
	// Removed lists the VNIs whose links were deleted.
	Removed []uint32
	// Writes is the number of netlink requests that changed something
	// (or tried to): one per change, two for a link creation (the link,
	// then its alias). A converged host costs 0.
	Writes int
	// Reads is the number of netlink dumps and lookups made.
	Reads int
	// Warnings maps a desired VNI to what degrades it without refusing it
	// (an underlay or access uplink MTU that dropped under it).
	Warnings map[uint32]string
}

// Reconcile makes the host's segments equal to desired, which must be the
// complete set for this host: owned segments missing from it are deleted.
// Calls must not overlap (the caller serialises them, e.g. one worker).
// A segment that is invalid, clashes with a foreign link, does not fit the
// underlay MTU or needs a kernel feature the host lacks is reported in
// Result.Segments and left as it was; the other segments are still
// programmed. The returned error joins every segment's error.
//
// A link that vanishes between the observation and a change (deleted
// behind our back while we run) fails that change with "not found": the
// pass is then run once more on a fresh observation, so a race with a
// deletion repairs at once instead of failing the segment for a pass.
func (d *DataPlane) Reconcile(ctx context.Context, desired []Segment) (Result, error) {
	res, err := d.reconcileOnce(ctx, desired)
	if err == nil || ctx.Err() != nil || !vanished(res) {
		return res, err
	}
	d.log.Info("a link vanished during the reconcile: observing again", zap.String("event", "reconcileRetried"), zap.Error(err))
	again, err := d.reconcileOnce(ctx, desired)
	again.Reads += res.Reads
	again.Writes += res.Writes
	again.Changes += res.Changes
	return again, err
}

// vanished: some segment failed only because a link was not found.
func vanished(res Result) bool {
	for _, err := range res.Segments {
		if err != nil && isNotFound(err) {
			return true
		}
	}
	return false
}

func (d *DataPlane) reconcileOnce(ctx context.Context, desired []Segment) (Result, error) {
	res := Result{Segments: map[uint32]error{}}
	var ops opCount
	snap, err := d.observe(&ops)
	res.Reads = ops.reads
	if err != nil {
		return res, fmt.Errorf("observe data plane: %w", err)
	}
	acts, refused := plan(desired, snap)
	for _, s := range desired {
		res.Segments[s.VNI] = refused[s.VNI]
	}
	res.Warnings = mtuWarnings(desired, snap)
	for vni, w := range res.Warnings {
		if refused[vni] == nil {
			d.log.Warn("segment degraded", zap.String("event", "segmentDegraded"), zap.Uint32("vni", vni), zap.String("reason", w))
		}
	}
	names := map[uint32]string{}
	for vni, o := range snap.segments {
		names[vni] = o.name
	}
	desiredVNI := map[uint32]bool{}
	for _, s := range desired {
		names[s.VNI] = s.Name
		desiredVNI[s.VNI] = true
	}
	failed := map[uint32]bool{}
	links := linkCache{h: d.h, byName: map[string]netlink.Link{}, ops: &ops}
	acts, removals := splitRemovals(acts, desiredVNI)
	for _, a := range acts {
		res.Reads, res.Writes = ops.reads, ops.writes
		if err := ctx.Err(); err != nil {
			return res, errors.Join(joinSegmentErrors(res.Segments), fmt.Errorf("reconcile interrupted: %w", err))
		}
		if failed[a.vni] {
			continue // stop the segment at its first failure
		}
		if err := d.apply(a, links, &ops); err != nil {
			failed[a.vni] = true
			err = fmt.Errorf("segment %q: %s: %w", names[a.vni], a, err)
			res.Segments[a.vni] = err // also for a removal that failed
			d.log.Error("data plane change failed", zap.String("event", "applyFailed"),
				zap.Uint32("vni", a.vni), zap.Stringer("action", a), zap.Error(err))
			continue
		}
		res.Changes++
		// Link changes are rare and worth reading; entry changes come by
		// the thousand on a takeover, so they go to debug plus a summary.
		lvl := zap.InfoLevel
		if a.kind >= actAddFlood {
			lvl = zap.DebugLevel
		}
		d.log.Log(lvl, "data plane changed", zap.String("event", "applied"),
			zap.Uint32("vni", a.vni), zap.String("segment", names[a.vni]), zap.Stringer("action", a))
	}
	for _, chunk := range chunkRemovals(removals, removalChunk) {
		if err := ctx.Err(); err != nil {
			res.Reads, res.Writes = ops.reads, ops.writes
			return res, errors.Join(joinSegmentErrors(res.Segments), fmt.Errorf("reconcile interrupted: %w", err))
		}
		done, errs := d.removeSegments(chunk, links, &ops)
		res.Changes += done
		for vni, err := range errs {
			failed[vni] = true
			err = fmt.Errorf("segment %q: remove: %w", names[vni], err)
			res.Segments[vni] = err
			d.log.Error("data plane change failed", zap.String("event", "applyFailed"), zap.Uint32("vni", vni), zap.Error(err))
		}
		for _, a := range chunk {
			if errs[a.vni] == nil {
				d.log.Info("data plane changed", zap.String("event", "applied"),
					zap.Uint32("vni", a.vni), zap.String("segment", names[a.vni]), zap.Stringer("action", a))
			}
		}
	}
	res.Reads, res.Writes = ops.reads, ops.writes
	if res.Changes > 0 {
		d.log.Info("data plane reconciled", zap.String("event", "reconciled"),
			zap.Int("changes", res.Changes), zap.Int("segments", len(desired)),
			zap.Int("netlinkWrites", res.Writes), zap.Int("netlinkReads", res.Reads))
	}
	for vni := range snap.segments {
		if !desiredVNI[vni] && !failed[vni] {
			res.Removed = append(res.Removed, vni)
		}
	}
	slices.Sort(res.Removed)
	for vni, err := range refused {
		d.log.Warn("segment refused", zap.String("event", "segmentRefused"),
			zap.Uint32("vni", vni), zap.String("segment", names[vni]), zap.Error(err))
	}
	return res, joinSegmentErrors(res.Segments)
}

func joinSegmentErrors(m map[uint32]error) error {
	var errs []error
	for _, vni := range sortedVNIs(m) {
		if m[vni] != nil {
			errs = append(errs, m[vni])
		}
	}
	return errors.Join(errs...)
}

func sortedVNIs(m map[uint32]error) []uint32 {
	out := make([]uint32, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// retryDump repeats a netlink dump that the kernel interrupted because the
// table changed under it (netlink v1.3.1 then returns partial data).
func retryDump[T any](ops *opCount, what string, fn func() (T, error)) (T, error) {
	var v T
	var err error
	for i := 0; i < 5; i++ {
		ops.reads++
		v, err = fn()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
		time.Sleep(time.Duration(i+1) * 5 * time.Millisecond)
	}
	if err != nil {
		return v, fmt.Errorf("list %s: %w", what, err)
	}
	return v, nil
}

// segmentLink parses an owned link name into its kind and VNI.
func segmentLink(name string) (kind string, vni uint32, ok bool) {
	for _, p := range []string{bridgePrefix, vxlanPrefix, vlanPrefix} {
		if rest, found := strings.CutPrefix(name, p); found {
			n, err := strconv.ParseUint(rest, 10, 32)
			if err != nil || n == 0 || n >= 1<<24 || strconv.FormatUint(n, 10) != rest {
				return "", 0, false
			}
			return p, uint32(n), true
		}
	}
	return "", 0, false
}

func (d *DataPlane) observe(ops *opCount) (snapshot, error) {
	snap := snapshot{
		segments: map[uint32]*observed{},
		ports:    map[string]string{},
		addrMTU:  map[netip.Addr]int{},
		linkMTU:  map[string]int{},
		clashes:  map[uint32]error{},
	}
	links, err := retryDump(ops, "links", d.h.LinkList)
	if err != nil {
		return snap, err
	}
	byIndex := map[int]netlink.Link{}
	for _, l := range links {
		byIndex[l.Attrs().Index] = l
	}
	nameOf := func(idx int) string {
		if l, ok := byIndex[idx]; ok {
			return l.Attrs().Name
		}
		return ""
	}
	seg := func(vni uint32) *observed {
		o := snap.segments[vni]
		if o == nil {
			o = &observed{flood: map[netip.Addr]bool{}, remoteMACs: map[string]netip.Addr{}, learned: map[string]netip.Addr{},
				portMACs: map[string]bool{}, neighbours: map[netip.Addr]string{},
				routes: map[netip.Prefix]bool{}, addrs: map[netip.Prefix]bool{}}
			snap.segments[vni] = o
		}
		return o
	}
	type owned struct {
		kind string
		vni  uint32
	}
	ownedIdx := map[int]owned{}
	for _, l := range links {
		a := l.Attrs()
		kind, vni, isOurs := segmentLink(a.Name)
		if !isOurs {
			snap.ports[a.Name] = nameOf(a.MasterIndex)
			snap.linkMTU[a.Name] = a.MTU
			continue
		}
		if !strings.HasPrefix(a.Alias, aliasPrefix) {
			snap.clashes[vni] = fmt.Errorf("link %s exists but was not created by netbridge (alias %q): remove or rename it", a.Name, a.Alias)
			continue
		}
		o := seg(vni)
		o.name, _, _ = strings.Cut(strings.TrimPrefix(a.Alias, aliasPrefix), accessTag)
		ol := &observedLink{name: a.Name, alias: a.Alias, master: nameOf(a.MasterIndex), mtu: a.MTU, up: a.Flags&net.FlagUp != 0}
		switch kind {
		case bridgePrefix:
			o.bridge = ol
		case vxlanPrefix:
			if vx, ok := l.(*netlink.Vxlan); ok {
				ol.vni = uint32(vx.VxlanId)
				ol.local, _ = netip.AddrFromSlice(vx.SrcAddr)
				ol.local = ol.local.Unmap()
				ol.port = vx.Port
				ol.learning = vx.Learning
			}
			o.vxlan = ol
		case vlanPrefix:
			if vl, ok := l.(*netlink.Vlan); ok {
				ol.parent = nameOf(a.ParentIndex)
				ol.vid = uint16(vl.VlanId)
			}
			o.vlan = ol
		}
		ownedIdx[a.Index] = owned{kind, vni}
	}
	for vni, o := range snap.segments {
		if o.bridge == nil {
			continue
		}
		if _, up, ok := strings.Cut(o.bridge.alias, accessTag); ok && snap.ports[up] == BridgeName(vni) {
			o.accessUplink = up
		}
	}

	addrs, err := retryDump(ops, "addresses", func() ([]netlink.Addr, error) { return d.h.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return snap, err
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if l, ok := byIndex[a.LinkIndex]; ok {
			snap.addrMTU[ip] = l.Attrs().MTU
		}
		if ow, ok := ownedIdx[a.LinkIndex]; ok && ow.kind == bridgePrefix && !ip.IsLinkLocalUnicast() {
			ones, _ := a.Mask.Size()
			seg(ow.vni).addrs[netip.PrefixFrom(ip, ones)] = true
		}
	}

	fdb, err := retryDump(ops, "fdb", func() ([]netlink.Neigh, error) { return d.h.NeighList(0, unix.AF_BRIDGE) })
	if err != nil {
		return snap, err
	}
	for _, n := range fdb {
		ow, ok := ownedIdx[n.LinkIndex]
		if !ok || ow.kind != vxlanPrefix {
			continue
		}
		o := seg(ow.vni)
		mac := n.HardwareAddr.String()
		switch {
		case n.Flags&netlink.NTF_SELF != 0 && n.State&netlink.NUD_PERMANENT == 0 && !isZeroMAC(n.HardwareAddr):
			// Learned entries (node role) are NUD_REACHABLE/STALE: not
			// configured by us, only flushed when their VTEP went away.
			if vtep, ok := netip.AddrFromSlice(n.IP); ok {
				o.learned[mac] = vtep.Unmap()
			}
		case n.Flags&netlink.NTF_SELF != 0 && n.State&netlink.NUD_PERMANENT != 0:
			vtep, ok := netip.AddrFromSlice(n.IP)
			if !ok {
				continue
			}
			if isZeroMAC(n.HardwareAddr) {
				o.flood[vtep.Unmap()] = true
			} else {
				o.remoteMACs[mac] = vtep.Unmap()
			}
		case n.Flags&netlink.NTF_SELF == 0 && n.State == netlink.NUD_NOARP:
			// The bridge's own entries: dumps do not set NTF_MASTER (iproute2
			// prints "master" from NDA_MASTER). Static is NUD_NOARP alone;
			// NUD_PERMANENT marks the bridge's local entries, not ours.
			o.portMACs[mac] = true
		}
	}

	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		neighs, err := retryDump(ops, "neighbours", func() ([]netlink.Neigh, error) { return d.h.NeighList(0, fam) })
		if err != nil {
			return snap, err
		}
		for _, n := range neighs {
			ow, ok := ownedIdx[n.LinkIndex]
			if !ok || ow.kind != bridgePrefix || n.State&netlink.NUD_PERMANENT == 0 {
				continue
			}
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				seg(ow.vni).neighbours[ip.Unmap()] = n.HardwareAddr.String()
			}
		}
	}

	routes, err := retryDump(ops, "routes", func() ([]netlink.Route, error) {
		return d.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return snap, err
	}
	for _, r := range routes {
		ow, ok := ownedIdx[r.LinkIndex]
		if !ok || ow.kind != bridgePrefix || r.Dst == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		seg(ow.vni).routes[netip.PrefixFrom(ip.Unmap(), ones)] = true
	}
	return snap, nil
}

// MissingFeatureError says which kernel feature (and module) the host lacks.
type MissingFeatureError struct {
	Feature string // e.g. "802.1Q VLAN sub-interfaces"
	Module  string // e.g. "8021q"
	Err     error
}

func (e *MissingFeatureError) Error() string {
	return fmt.Sprintf("kernel lacks %s: load module %s (modprobe %s) or use a kernel built with it: %v",
		e.Feature, e.Module, e.Module, e.Err)
}

func (e *MissingFeatureError) Unwrap() error { return e.Err }

// featureErr turns "Unknown device type" (EOPNOTSUPP from rtnetlink when
// no driver registered the link kind) into an error naming the module.
func featureErr(err error, feature, module string) error {
	if errors.Is(err, unix.EOPNOTSUPP) {
		return &MissingFeatureError{Feature: feature, Module: module, Err: err}
	}
	return err
}

const (
	featVLAN   = "802.1Q VLAN sub-interfaces"
	featBridge = "Linux bridges"
	featVXLAN  = "VXLAN devices"
)

// linkCache saves a lookup per change within one Reconcile: only the
// index of a cached link is used, which stays valid until the link is
// deleted or re-created (both drop it from the cache).
type linkCache struct {
	h      *netlink.Handle
	byName map[string]netlink.Link
	ops    *opCount
}

func (c linkCache) get(name string) (netlink.Link, error) {
	if l, ok := c.byName[name]; ok {
		return l, nil
	}
	c.ops.reads++
	l, err := c.h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find link %s: %w", name, err)
	}
	c.byName[name] = l
	return l, nil
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ESRCH)
}

func (d *DataPlane) apply(a action, links linkCache, ops *opCount) error {
	switch a.kind {
	case actCreateVLAN, actCreateBridge, actCreateVXLAN:
		delete(links.byName, a.link)
		return d.create(a, links, ops)
	case actDeleteLink:
		delete(links.byName, a.link)
		ops.reads++
		l, err := d.h.LinkByName(a.link)
		if isNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		ops.writes++
		return d.h.LinkDel(l)
	}

	l, err := links.get(a.link)
	if err != nil {
		return err
	}
	// Every remaining action is exactly one netlink write.
	ops.writes++
	idx := l.Attrs().Index
	mac, _ := net.ParseMAC(a.mac)
	fdb := func(flags, state int, ip netip.Addr, hw net.HardwareAddr) *netlink.Neigh {
		n := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: flags, State: state, HardwareAddr: hw}
		if ip.IsValid() {
			n.IP = ip.AsSlice()
		}
		return n
	}
	const static = netlink.NUD_PERMANENT | netlink.NUD_NOARP
	switch a.kind {
	case actSetAlias:
		return d.h.LinkSetAlias(l, a.alias)
	case actSetMaster:
		m, err := links.get(a.other)
		if err != nil {
			return err
		}
		return d.h.LinkSetMaster(l, m)
	case actSetNoMaster:
		return d.h.LinkSetNoMaster(l)
	case actSetMTU:
		return d.h.LinkSetMTU(l, a.mtu)
	case actSetUp:
		return d.h.LinkSetUp(l)
	case actAddFlood:
		err := d.h.NeighAppend(fdb(netlink.NTF_SELF, static, a.ip, make(net.HardwareAddr, 6)))
		if errors.Is(err, unix.EEXIST) {
			return nil
		}
		return err
	case actDelFlood:
		return ignoreNotFound(d.h.NeighDel(fdb(netlink.NTF_SELF, static, a.ip, make(net.HardwareAddr, 6))))
	case actSetRemoteMAC:
		return d.h.NeighSet(fdb(netlink.NTF_SELF, static, a.ip, mac))
	case actDelRemoteMAC:
		return ignoreNotFound(d.h.NeighDel(fdb(netlink.NTF_SELF, static, a.ip, mac)))
	case actDelLearned:
		return ignoreNotFound(d.h.NeighDel(fdb(netlink.NTF_SELF, 0, a.ip, mac)))
	case actSetPortMAC:
		// NUD_NOARP alone is "static"; NUD_PERMANENT would make the MAC
		// local to the bridge.
		return d.h.NeighSet(fdb(netlink.NTF_MASTER, netlink.NUD_NOARP, netip.Addr{}, mac))
	case actDelPortMAC:
		return ignoreNotFound(d.h.NeighDel(fdb(netlink.NTF_MASTER, netlink.NUD_NOARP, netip.Addr{}, mac)))
	case actSetNeigh, actDelNeigh:
		n := &netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT, IP: a.ip.AsSlice(), HardwareAddr: mac}
		if a.ip.Is6() {
			n.Family = netlink.FAMILY_V6
		}
		if a.kind == actDelNeigh {
			return ignoreNotFound(d.h.NeighDel(n))
		}
		return d.h.NeighSet(n)
	case actAddRoute, actDelRoute:
		r := &netlink.Route{LinkIndex: idx, Dst: prefixNet(a.prefix), Scope: netlink.SCOPE_LINK, Protocol: RouteProtocol}
		if a.kind == actDelRoute {
			return ignoreNotFound(d.h.RouteDel(r))
		}
		if err := d.h.RouteAdd(r); errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("a route to %s that netbridge did not install exists: %w", a.prefix, err)
		} else if err != nil {
			return err
		}
		return nil
	case actAddAddr, actDelAddr:
		addr := &netlink.Addr{IPNet: prefixNet(a.prefix)}
		addr.IP = a.prefix.Addr().AsSlice() // the host part, not the network
		if a.kind == actDelAddr {
			return ignoreNotFound(d.h.AddrDel(l, addr))
		}
		if err := d.h.AddrAdd(l, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
		return nil
	}
	return fmt.Errorf("unknown action %d", a.kind)
}

func ignoreNotFound(err error) error {
	if err != nil && (errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.EADDRNOTAVAIL)) {
		return nil
	}
	return err
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Masked().Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// randomMAC returns a locally administered unicast MAC.
func randomMAC() (net.HardwareAddr, error) {
	m := make(net.HardwareAddr, 6)
	if _, err := rand.Read(m); err != nil {
		return nil, fmt.Errorf("random mac: %w", err)
	}
	m[0] = m[0]&^1 | 2
	return m, nil
}

func (d *DataPlane) create(a action, links linkCache, ops *opCount) error {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = a.link
	if a.mtu != 0 {
		attrs.MTU = a.mtu
	}
	var l netlink.Link
	var feature, module string
	switch a.kind {
	case actCreateVLAN:
		parent, err := links.get(a.other)
		if err != nil {
			return err
		}
		attrs.ParentIndex = parent.Attrs().Index
		l, feature, module = &netlink.Vlan{LinkAttrs: attrs, VlanId: int(a.vid)}, featVLAN, "8021q"
	case actCreateBridge:
		// Optional bridge attributes stay nil: on some kernels setting
		// VlanFiltering at all (even false) is refused. A fixed MAC keeps
		// the bridge from taking its lowest port's MAC as ports come and
		// go: each change of address flushes even permanent neighbours.
		mac, err := randomMAC()
		if err != nil {
			return err
		}
		attrs.HardwareAddr = mac
		l, feature, module = &netlink.Bridge{LinkAttrs: attrs}, featBridge, "bridge"
	default:
		l = &netlink.Vxlan{LinkAttrs: attrs, VxlanId: int(a.vni), SrcAddr: a.ip.AsSlice(),
			Port: DefaultVXLANPort, Learning: a.learn}
		feature, module = featVXLAN, "vxlan"
	}
	ops.writes++
	if err := d.h.LinkAdd(l); err != nil {
		return featureErr(err, feature, module)
	}
	// The kernel ignores IFLA_IFALIAS in RTM_NEWLINK, so the ownership mark
	// comes right after. If it cannot be set the link goes again; a crash
	// between the two calls leaves an unmarked link that the next run
	// reports as a clash (for a person to remove) instead of adopting.
	ops.writes++
	if err := d.h.LinkSetAlias(l, a.alias); err != nil {
		ops.writes++
		if derr := d.h.LinkDel(l); derr != nil {
			return errors.Join(fmt.Errorf("set alias: %w", err), fmt.Errorf("delete unmarked %s: %w", a.link, derr))
		}
		return fmt.Errorf("set alias: %w", err)
	}
	return nil
}

// removalChunk is how many segments one batched deletion removes: the
// kernel holds the RTNL lock for the whole batch (each bridge waits for an
// RCU barrier, ~16 ms here), so a chunk bounds how long other netlink
// writers (FRR's zebra, the kubelet's CNI) wait behind a trunk removal.
const removalChunk = 64

// splitRemovals separates the link deletions of segments that are no
// longer desired (plan emits them last) from every other action.
func splitRemovals(acts []action, desired map[uint32]bool) (rest, removals []action) {
	for _, a := range acts {
		if a.kind == actDeleteLink && !desired[a.vni] {
			removals = append(removals, a)
		} else {
			rest = append(rest, a)
		}
	}
	return rest, removals
}

// chunkRemovals groups removals into chunks of at most n segments, keeping
// each segment's links (in plan order) in one chunk.
func chunkRemovals(removals []action, n int) [][]action {
	var out [][]action
	start, segs := 0, 0
	for i, a := range removals {
		if i > 0 && a.vni != removals[i-1].vni {
			segs++
			if segs == n {
				out = append(out, removals[start:i])
				start, segs = i, 0
			}
		}
	}
	if start < len(removals) {
		out = append(out, removals[start:])
	}
	return out
}

// removeSegments deletes the links of whole segments. Deleting them one
// RTM_DELLINK at a time costs two or three RCU waits per segment (one per
// unregistration batch, plus the bridge's multicast teardown): ~50 ms a
// segment on these machines. Instead the links are tagged with a random
// link group and deleted by group in one request: the kernel unregisters
// them as one batch, and only the bridge's own RCU barrier
// (br_multicast_dev_del) stays per segment. Where the batch cannot be used
// safely (the group is not visible from the namespace a raw socket reaches)
// it falls back to one deletion per link. It returns the number of links
// deleted and the segments that failed.
func (d *DataPlane) removeSegments(chunk []action, links linkCache, ops *opCount) (int, map[uint32]error) {
	errs := map[uint32]error{}
	if n, err := d.removeByGroup(chunk, links, ops); err == nil {
		return n, errs
	} else {
		d.log.Debug("batched removal not possible, deleting links one by one", zap.String("event", "removalFallback"), zap.Error(err))
	}
	deleted := 0
	for _, a := range chunk {
		if errs[a.vni] != nil {
			continue
		}
		if err := d.apply(a, links, ops); err != nil {
			errs[a.vni] = fmt.Errorf("%s: %w", a, err)
			continue
		}
		deleted++
	}
	return deleted, errs
}

// errGroupUnreachable: the raw socket does not see the links the handle
// tagged (the DataPlane's handle is in a namespace it cannot name).
var errGroupUnreachable = errors.New("tagged links not visible from the batch socket's namespace")

func (d *DataPlane) removeByGroup(chunk []action, links linkCache, ops *opCount) (int, error) {
	var g [4]byte
	if _, err := rand.Read(g[:]); err != nil {
		return 0, fmt.Errorf("random link group: %w", err)
	}
	// High bit set and never 0 (the default group every link is in).
	group := int(uint32(g[0])<<24|uint32(g[1])<<16|uint32(g[2])<<8|uint32(g[3])) | 1<<31
	var tagged []netlink.Link
	for _, a := range chunk {
		delete(links.byName, a.link)
		ops.reads++
		l, err := d.h.LinkByName(a.link)
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("find link %s: %w", a.link, err)
		}
		ops.writes++
		if err := d.h.LinkSetGroup(l, group); err != nil {
			return 0, fmt.Errorf("tag %s with group %d: %w", a.link, group, err)
		}
		tagged = append(tagged, l)
	}
	if len(tagged) == 0 {
		return 0, nil
	}
	sock, peer, err := d.batchSockets()
	if err != nil {
		return 0, err
	}
	defer sock.Close()
	defer peer.Close()
	// The namespace check: the peer handle (same namespace as sock) must see
	// the first tagged link, by index, under its name and in the group.
	ops.reads++
	seen, err := peer.LinkByIndex(tagged[0].Attrs().Index)
	if err != nil || seen.Attrs().Name != tagged[0].Attrs().Name || seen.Attrs().Group != uint32(group) {
		return 0, errGroupUnreachable
	}
	req := &nl.NetlinkRequest{
		NlMsghdr: unix.NlMsghdr{Len: uint32(unix.SizeofNlMsghdr), Type: unix.RTM_DELLINK, Flags: unix.NLM_F_REQUEST | unix.NLM_F_ACK},
		Sockets:  map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: sock}},
	}
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC)) // index 0: select by group
	req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(uint32(group))))
	ops.writes++
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return 0, fmt.Errorf("delete link group %d (%d links): %w", group, len(tagged), err)
	}
	return len(tagged), nil
}

// batchSockets opens a raw rtnetlink socket and a handle in the
// DataPlane's namespace when it knows it (NewAt), else in the process's.
func (d *DataPlane) batchSockets() (*nl.NetlinkSocket, *netlink.Handle, error) {
	ns := netns.None()
	if d.ns != nil {
		ns = *d.ns
	}
	sock, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, nil, fmt.Errorf("netlink socket for batched removal: %w", err)
	}
	peer, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		sock.Close()
		return nil, nil, fmt.Errorf("netlink handle for batched removal: %w", err)
	}
	return sock, peer, nil
}
