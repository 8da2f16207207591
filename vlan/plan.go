package vlan

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// snapshot is what the host has, as far as segments are concerned.
type snapshot struct {
	segments map[uint32]*observed
	// ports maps every link we did not create to its master's name ("" if
	// none): an access uplink must exist and must not belong to another
	// bridge; a trunk must exist.
	ports map[string]string
	// addrMTU maps each local address to its device's MTU (underlay check).
	addrMTU map[netip.Addr]int
	// linkMTU maps every link we did not create to its MTU (access uplinks).
	linkMTU map[string]int
	// clashes: a link has our name but not our alias. The segment is
	// refused and the link left alone.
	clashes map[uint32]error
}

// observed is one segment's owned links and the entries we manage on them.
type observed struct {
	name                string // segment name, from the alias (for logs)
	bridge, vxlan, vlan *observedLink
	// accessUplink is the foreign uplink recorded in the bridge alias and
	// still enslaved to the bridge.
	accessUplink string
	flood        map[netip.Addr]bool
	remoteMACs   map[string]netip.Addr // vxlan self entries: MAC -> VTEP
	// learned are the VXLAN device's own learned entries (node role):
	// MAC -> the VTEP it was last seen behind.
	learned    map[string]netip.Addr
	portMACs   map[string]bool       // static bridge entries on the vxlan port
	neighbours map[netip.Addr]string // permanent bridge neighbours: IP -> MAC
	routes     map[netip.Prefix]bool // our protocol, through the bridge
	addrs      map[netip.Prefix]bool // non-link-local bridge addresses
}

type observedLink struct {
	name, alias, master string
	mtu                 int
	up                  bool
	// vxlan only
	vni      uint32
	local    netip.Addr
	port     int
	learning bool
	// vlan only
	parent string
	vid    uint16
}

type actionKind int

const (
	actDeleteLink actionKind = iota
	actCreateVLAN
	actCreateBridge
	actCreateVXLAN
	actSetAlias
	actSetMaster
	actSetNoMaster
	actSetMTU
	actSetUp
	actAddFlood
	actDelFlood
	actSetRemoteMAC
	actDelRemoteMAC
	actSetPortMAC
	actDelPortMAC
	actSetNeigh
	actDelNeigh
	actAddRoute
	actDelRoute
	actAddAddr
	actDelAddr
	actDelLearned
)

var actionNames = [...]string{
	"delete-link", "create-vlan", "create-bridge", "create-vxlan", "set-alias",
	"set-master", "set-nomaster", "set-mtu", "set-up", "add-flood", "del-flood",
	"set-remote-mac", "del-remote-mac", "set-port-mac", "del-port-mac",
	"set-neigh", "del-neigh", "add-route", "del-route", "add-addr", "del-addr",
	"del-learned",
}

// action is one netlink change. Plain data so that the plan is a pure,
// table-tested function and every change can be logged as it is applied.
type action struct {
	kind   actionKind
	vni    uint32
	link   string
	other  string // parent (create-vlan) or master (set-master)
	vid    uint16
	mtu    int
	alias  string
	learn  bool
	ip     netip.Addr // VTEP (create-vxlan: local; fdb: remote) or neighbour IP
	mac    string
	prefix netip.Prefix
}

func (a action) String() string {
	var b strings.Builder
	b.WriteString(actionNames[a.kind])
	b.WriteString(" " + a.link)
	switch a.kind {
	case actCreateVLAN:
		fmt.Fprintf(&b, " parent %s vid %d mtu %d", a.other, a.vid, a.mtu)
	case actCreateBridge:
		fmt.Fprintf(&b, " mtu %d", a.mtu)
	case actCreateVXLAN:
		fmt.Fprintf(&b, " vni %d local %s learning %t mtu %d", a.vni, a.ip, a.learn, a.mtu)
	case actSetAlias:
		fmt.Fprintf(&b, " %q", a.alias)
	case actSetMaster:
		b.WriteString(" " + a.other)
	case actSetMTU:
		fmt.Fprintf(&b, " %d", a.mtu)
	case actAddFlood, actDelFlood:
		b.WriteString(" " + a.ip.String())
	case actSetRemoteMAC, actDelRemoteMAC, actSetNeigh, actDelNeigh, actDelLearned:
		fmt.Fprintf(&b, " %s %s", a.mac, a.ip)
	case actSetPortMAC, actDelPortMAC:
		b.WriteString(" " + a.mac)
	case actAddRoute, actDelRoute, actAddAddr, actDelAddr:
		b.WriteString(" " + a.prefix.String())
	}
	return b.String()
}

// vxlanOverhead is what encapsulation adds: outer Ethernet is not counted
// by the underlay MTU, so IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14.
func vxlanOverhead(vtep netip.Addr) int {
	if vtep.Is4() {
		return 50
	}
	return 70
}

// plan computes the changes that turn snap into desired. It returns the
// actions in the order they must run and, per refused segment, why: a
// refused segment gets no action at all, so it is never half-programmed,
// and an undesired segment whose links are still there is removed.
func plan(desired []Segment, snap snapshot) ([]action, map[uint32]error) {
	refused := validateSet(desired)
	for _, s := range desired {
		if err := s.Validate(); err != nil {
			refused[s.VNI] = err
		}
	}
	var acts []action
	want := map[uint32]bool{}
	sorted := slices.Clone(desired)
	slices.SortFunc(sorted, func(a, b Segment) int { return int(a.VNI) - int(b.VNI) })
	for _, s := range sorted {
		want[s.VNI] = true
		if refused[s.VNI] != nil {
			continue
		}
		if err := snap.clashes[s.VNI]; err != nil {
			refused[s.VNI] = err
			continue
		}
		o := snap.segments[s.VNI]
		if o == nil {
			o = &observed{}
		}
		segActs, err := planSegment(s, o, snap)
		if err != nil {
			refused[s.VNI] = fmt.Errorf("segment %q: %w", s.Name, err)
			continue
		}
		acts = append(acts, segActs...)
	}
	var gone []uint32
	for vni := range snap.segments {
		if !want[vni] {
			gone = append(gone, vni)
		}
	}
	slices.Sort(gone)
	for _, vni := range gone {
		o := snap.segments[vni]
		// The VLAN side first: the legacy VLAN stops being bridged before
		// anything else changes. Deleting the bridge releases its ports
		// (also an access uplink) by itself.
		for _, l := range []*observedLink{o.vlan, o.vxlan, o.bridge} {
			if l != nil {
				acts = append(acts, action{kind: actDeleteLink, vni: vni, link: l.name})
			}
		}
	}
	return acts, refused
}

func planSegment(s Segment, o *observed, snap snapshot) ([]action, error) {
	mtu := s.MTU
	if mtu == 0 {
		mtu = 1500
	}
	vtepMTU, ok := snap.addrMTU[s.LocalVTEP]
	if !ok {
		return nil, fmt.Errorf("localVTEP %s is not an address of this host", s.LocalVTEP)
	}
	// Refusing is for a segment's first programming. An underlay MTU that
	// drops under a programmed segment is a runtime change: the segment
	// keeps forwarding what still fits and mtuWarnings reports it.
	programmed := o.bridge != nil && o.vxlan != nil
	if need := mtu + vxlanOverhead(s.LocalVTEP); vtepMTU < need && !programmed {
		return nil, fmt.Errorf("mtu %d does not fit the underlay: the device holding %s has MTU %d, VXLAN needs %d "+
			"(set the segment mtu to %d or less, or raise the underlay MTU to %d)",
			mtu, s.LocalVTEP, vtepMTU, need, vtepMTU-vxlanOverhead(s.LocalVTEP), need)
	}
	if s.Uplink != "" {
		master, exists := snap.ports[s.Uplink]
		if !exists {
			return nil, fmt.Errorf("uplink %s not found", s.Uplink)
		}
		if s.Access && master != "" && master != BridgeName(s.VNI) {
			return nil, fmt.Errorf("access uplink %s is already a port of %s", s.Uplink, master)
		}
	}

	br, vx, vl := BridgeName(s.VNI), VXLANName(s.VNI), VLANName(s.VNI)
	var acts []action
	add := func(a action) { a.vni = s.VNI; acts = append(acts, a) }

	// The tagged sub-interface is created before anything else: on a
	// kernel without 8021q this is the step that fails, and nothing of the
	// segment exists yet.
	wantVLAN := s.Uplink != "" && !s.Access
	vlanOK := o.vlan != nil && wantVLAN && o.vlan.parent == s.Uplink && o.vlan.vid == s.VLANID
	if o.vlan != nil && !vlanOK {
		add(action{kind: actDeleteLink, link: vl})
	}
	if wantVLAN && !vlanOK {
		add(action{kind: actCreateVLAN, link: vl, other: s.Uplink, vid: s.VLANID, mtu: s.MTU, alias: alias(s)})
	}

	wantAccess := ""
	if s.Uplink != "" && s.Access {
		wantAccess = s.Uplink
	}
	if o.accessUplink != "" && o.accessUplink != wantAccess {
		add(action{kind: actSetNoMaster, link: o.accessUplink})
	}
	if o.bridge == nil {
		add(action{kind: actCreateBridge, link: br, mtu: s.MTU, alias: alias(s)})
	} else if o.bridge.alias != alias(s) {
		add(action{kind: actSetAlias, link: br, alias: alias(s)})
	}

	learn := s.Role == RoleNode
	vxOK := o.vxlan != nil && o.vxlan.vni == s.VNI && o.vxlan.local == s.LocalVTEP &&
		o.vxlan.port == DefaultVXLANPort && o.vxlan.learning == learn
	if o.vxlan != nil && !vxOK {
		// VNI, local address, port and learning cannot all be changed in
		// place on every kernel: recreate, with the entries it carried.
		add(action{kind: actDeleteLink, link: vx})
	}
	if !vxOK {
		add(action{kind: actCreateVXLAN, link: vx, ip: s.LocalVTEP, learn: learn, mtu: s.MTU, alias: alias(s)})
		o = &observed{bridge: o.bridge, vlan: o.vlan, accessUplink: o.accessUplink,
			neighbours: o.neighbours, routes: o.routes, addrs: o.addrs}
	}
	if !vxOK || o.vxlan.master != br {
		add(action{kind: actSetMaster, link: vx, other: br})
	}
	if wantVLAN && (!vlanOK || o.vlan.master != br) {
		add(action{kind: actSetMaster, link: vl, other: br})
	}
	if wantAccess != "" && snap.ports[wantAccess] != br {
		add(action{kind: actSetMaster, link: wantAccess, other: br})
	}

	if s.MTU != 0 {
		if vxOK && o.vxlan.mtu != s.MTU {
			add(action{kind: actSetMTU, link: vx, mtu: s.MTU})
		}
		if vlanOK && o.vlan.mtu != s.MTU {
			add(action{kind: actSetMTU, link: vl, mtu: s.MTU})
		}
		// Set on the bridge in every case where it may differ: a bridge
		// without an explicit MTU follows its smallest port.
		if o.bridge == nil || o.bridge.mtu != s.MTU || !vxOK || (wantVLAN && !vlanOK) {
			add(action{kind: actSetMTU, link: br, mtu: s.MTU})
		}
	}
	if wantVLAN && (!vlanOK || !o.vlan.up) {
		add(action{kind: actSetUp, link: vl})
	}
	if !vxOK || !o.vxlan.up {
		add(action{kind: actSetUp, link: vx})
	}
	if o.bridge == nil || !o.bridge.up {
		add(action{kind: actSetUp, link: br})
	}

	// Forwarding entries.
	wantFlood := map[netip.Addr]bool{}
	for _, v := range s.FloodVTEPs {
		if v != s.LocalVTEP {
			wantFlood[v] = true
		}
	}
	for _, v := range sortedAddrs(o.flood) {
		if !wantFlood[v] {
			add(action{kind: actDelFlood, link: vx, ip: v})
		}
	}
	for _, v := range sortedAddrs(wantFlood) {
		if !o.flood[v] {
			add(action{kind: actAddFlood, link: vx, ip: v})
		}
	}

	wantRemote := map[string]netip.Addr{}
	wantNeigh := map[netip.Addr]string{}
	wantRoutes := map[netip.Prefix]bool{}
	for _, e := range s.Endpoints {
		mac := e.MAC.String()
		if e.VTEP != s.LocalVTEP {
			wantRemote[mac] = e.VTEP
		}
		for _, ip := range e.IPs {
			wantNeigh[ip] = mac
			if s.HostRoutes {
				wantRoutes[netip.PrefixFrom(ip, ip.BitLen())] = true
			}
		}
	}
	// A learned entry behind a VTEP that is neither a flood target nor an
	// endpoint's node points at a gateway that is no longer active: until
	// it ages out (300 s) the node would send that MAC's traffic (the
	// legacy router's, typically) into a detached gateway. Flushing it
	// floods the next frame to the new active gateway, which relearns it.
	knownVTEP := map[netip.Addr]bool{}
	for v := range wantFlood {
		knownVTEP[v] = true
	}
	for _, v := range wantRemote {
		knownVTEP[v] = true
	}
	for _, mac := range sortedKeys(o.learned) {
		if v := o.learned[mac]; !knownVTEP[v] {
			add(action{kind: actDelLearned, link: vx, mac: mac, ip: v})
		}
	}
	for _, mac := range sortedKeys(o.remoteMACs) {
		if _, ok := wantRemote[mac]; !ok {
			add(action{kind: actDelRemoteMAC, link: vx, mac: mac, ip: o.remoteMACs[mac]})
		}
	}
	for _, mac := range sortedKeys(o.portMACs) {
		if _, ok := wantRemote[mac]; !ok {
			add(action{kind: actDelPortMAC, link: vx, mac: mac})
		}
	}
	for _, mac := range sortedKeys(wantRemote) {
		if vtep, ok := o.remoteMACs[mac]; !ok || vtep != wantRemote[mac] {
			add(action{kind: actSetRemoteMAC, link: vx, mac: mac, ip: wantRemote[mac]})
		}
		if !o.portMACs[mac] {
			add(action{kind: actSetPortMAC, link: vx, mac: mac})
		}
	}

	for _, ip := range sortedAddrs(o.neighbours) {
		if _, ok := wantNeigh[ip]; !ok {
			add(action{kind: actDelNeigh, link: br, ip: ip, mac: o.neighbours[ip]})
		}
	}
	for _, ip := range sortedAddrs(wantNeigh) {
		if o.neighbours[ip] != wantNeigh[ip] {
			add(action{kind: actSetNeigh, link: br, ip: ip, mac: wantNeigh[ip]})
		}
	}

	wantAddrs := map[netip.Prefix]bool{}
	if s.GatewayAddress.IsValid() {
		wantAddrs[s.GatewayAddress] = true
	}
	for _, p := range sortedPrefixes(o.addrs) {
		if !wantAddrs[p] {
			add(action{kind: actDelAddr, link: br, prefix: p})
		}
	}
	for _, p := range sortedPrefixes(wantAddrs) {
		if !o.addrs[p] {
			add(action{kind: actAddAddr, link: br, prefix: p})
		}
	}
	for _, p := range sortedPrefixes(o.routes) {
		if !wantRoutes[p] {
			add(action{kind: actDelRoute, link: br, prefix: p})
		}
	}
	for _, p := range sortedPrefixes(wantRoutes) {
		if !o.routes[p] {
			add(action{kind: actAddRoute, link: br, prefix: p})
		}
	}
	return acts, nil
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func sortedAddrs[V any](m map[netip.Addr]V) []netip.Addr {
	ks := make([]netip.Addr, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.SortFunc(ks, func(a, b netip.Addr) int { return a.Compare(b) })
	return ks
}

func sortedPrefixes(m map[netip.Prefix]bool) []netip.Prefix {
	ks := make([]netip.Prefix, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.SortFunc(ks, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return ks
}

// mtuWarnings are the desired segments that run, or would run, with an MTU
// the links under them no longer carry: the underlay device holding the
// local VTEP, or an access uplink. They are reported (the agent says
// Degraded, naming the device and both MTUs), never torn down.
func mtuWarnings(desired []Segment, snap snapshot) map[uint32]string {
	out := map[uint32]string{}
	for _, s := range desired {
		mtu := s.MTU
		if mtu == 0 {
			mtu = 1500
		}
		var msgs []string
		if vtepMTU, ok := snap.addrMTU[s.LocalVTEP]; ok {
			if need := mtu + vxlanOverhead(s.LocalVTEP); vtepMTU < need {
				msgs = append(msgs, fmt.Sprintf("the underlay device holding %s has MTU %d, segment MTU %d needs %d: larger frames are dropped",
					s.LocalVTEP, vtepMTU, mtu, need))
			}
		}
		if s.Access && s.Uplink != "" {
			if up, ok := snap.linkMTU[s.Uplink]; ok && up < mtu {
				msgs = append(msgs, fmt.Sprintf("access uplink %s has MTU %d, below the segment MTU %d", s.Uplink, up, mtu))
			}
		}
		if len(msgs) > 0 {
			out[s.VNI] = fmt.Sprintf("segment %q: %s", s.Name, strings.Join(msgs, "; "))
		}
	}
	return out
}
