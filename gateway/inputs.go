package gateway

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

// Inputs are the objects the agent reads, from the API server's cache or
// from a file: the same translation serves both.
type Inputs struct {
	NodeName   string
	Role       Role
	NodeLabels map[string]string
	LocalVTEP  netip.Addr
	Configs    []nbv1.BridgeConfig
	Endpoints  []nbv1.BridgeEndpoint
	// Nodes maps node name to its labels and VTEP (gateway candidates and
	// the active gateway's VTEP for node-role hosts).
	Nodes map[string]NodeInfo
	// LeaseHolders maps a segment to the node holding its lease.
	LeaseHolders map[SegmentKey]string
	// Password returns the BGP password behind a Secret reference.
	Password func(ref nbv1.SecretKeyRef) (string, error)
}

// NodeInfo is what the agent needs of a Node.
type NodeInfo struct {
	Labels map[string]string
	VTEP   netip.Addr
}

// Translate turns the inputs into this host's desired state. It never
// fails as a whole: a bad segment carries its Error, a bad peer or
// endpoint is dropped and reported in problems.
func Translate(in Inputs) (d Desired, problems []string) {
	configs := slices.Clone(in.Configs)
	// Earlier BridgeConfig wins a clash, as the controller decides.
	sort.SliceStable(configs, func(i, j int) bool {
		ti, tj := configs[i].CreationTimestamp, configs[j].CreationTimestamp
		if !ti.Equal(&tj) {
			return ti.Before(&tj)
		}
		return configs[i].Name < configs[j].Name
	})
	vniOwner := map[uint32]SegmentKey{}
	segs := map[SegmentKey]*Segment{}
	for i := range configs {
		bc := &configs[i]
		if in.Role == RoleGateway {
			sel, err := metav1.LabelSelectorAsSelector(&bc.Spec.GatewaySelector)
			if err != nil {
				problems = append(problems, fmt.Sprintf("bridgeconfig %s: spec.gatewaySelector: %v", bc.Name, err))
				continue
			}
			if !sel.Matches(labels.Set(in.NodeLabels)) {
				continue
			}
			if d.BGP == nil && bc.Spec.BGP != nil {
				b, probs := translateBGP(bc, in)
				problems = append(problems, probs...)
				d.BGP = b
			} else if bc.Spec.BGP != nil {
				problems = append(problems, fmt.Sprintf("bridgeconfig %s: bgp ignored on node %s, another BridgeConfig already configures BGP here", bc.Name, in.NodeName))
			}
		}
		candidates := candidatesFor(bc, in)
		for _, s := range bc.Spec.Segments {
			k := SegmentKey{BridgeConfig: bc.Name, Name: s.Name}
			seg := &Segment{Key: k, VLANID: uint16(s.VLANID), VNI: uint32(s.VNI), Access: s.Access,
				MTU: int(s.MTU), Phase: Phase(s.Phase), Communities: s.Communities, Candidates: candidates}
			if seg.Phase == "" {
				seg.Phase = PhaseExtended
			}
			up := bc.Spec.Uplink
			if s.Uplink != nil {
				up = *s.Uplink
			}
			seg.Uplink = up.Interface
			if seg.Uplink == "" && in.Role == RoleGateway {
				seg.Error = fmt.Sprintf("segment %s: uplink selection by address (%s) is not supported by this agent yet; set uplink.interface", k, up.Address)
			}
			for _, c := range s.Subnets {
				p, err := netip.ParsePrefix(c)
				if err != nil {
					seg.Error = fmt.Sprintf("segment %s: subnets: %q: %v", k, c, err)
					continue
				}
				seg.Subnets = append(seg.Subnets, p.Masked())
			}
			if s.GatewayAddress != "" {
				if p, err := netip.ParsePrefix(s.GatewayAddress); err == nil {
					seg.GatewayAddress = p
				}
			}
			if other, taken := vniOwner[seg.VNI]; taken {
				seg.Error = fmt.Sprintf("segment %s: vni %d already used on this node by segment %s", k, seg.VNI, other)
			} else {
				vniOwner[seg.VNI] = k
			}
			if holder := in.LeaseHolders[k]; holder != "" {
				seg.ActiveGatewayVTEP = in.Nodes[holder].VTEP
			}
			segs[k] = seg
			d.Segments = append(d.Segments, *seg)
		}
	}
	for _, be := range in.Endpoints {
		k := SegmentKey{BridgeConfig: be.Spec.BridgeConfig, Name: be.Spec.Segment}
		if _, ok := segs[k]; !ok {
			continue
		}
		ep, err := translateEndpoint(be)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		d.Endpoints = append(d.Endpoints, ep)
	}
	sort.Slice(d.Endpoints, func(i, j int) bool { return d.Endpoints[i].ID() < d.Endpoints[j].ID() })
	return d, problems
}

// candidatesFor lists the gateway nodes selected by a BridgeConfig, this
// node first when it is one.
func candidatesFor(bc *nbv1.BridgeConfig, in Inputs) []string {
	sel, err := metav1.LabelSelectorAsSelector(&bc.Spec.GatewaySelector)
	if err != nil {
		return nil
	}
	var out []string
	for name, n := range in.Nodes {
		if sel.Matches(labels.Set(n.Labels)) {
			out = append(out, name)
		}
	}
	if in.Role == RoleGateway && !slices.Contains(out, in.NodeName) {
		out = append(out, in.NodeName)
	}
	sort.Strings(out)
	return out
}

func translateEndpoint(be nbv1.BridgeEndpoint) (Endpoint, error) {
	ep := Endpoint{Namespace: be.Namespace, Name: be.Name,
		Segment:  SegmentKey{BridgeConfig: be.Spec.BridgeConfig, Name: be.Spec.Segment},
		NodeName: be.Spec.NodeName, State: EndpointState(be.Spec.State)}
	if ep.State == "" {
		ep.State = StateStaged
	}
	id := be.Namespace + "/" + be.Name
	if be.Spec.MAC != "" {
		mac, err := net.ParseMAC(be.Spec.MAC)
		if err != nil {
			return ep, fmt.Errorf("endpoint %s: spec.mac %q: %v", id, be.Spec.MAC, err)
		}
		ep.MAC = mac
	}
	for _, s := range be.Spec.IPs {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return ep, fmt.Errorf("endpoint %s: spec.ips %q: %v", id, s, err)
		}
		ep.IPs = append(ep.IPs, ip.Unmap())
	}
	if be.Spec.VTEP != "" {
		v, err := netip.ParseAddr(be.Spec.VTEP)
		if err != nil {
			return ep, fmt.Errorf("endpoint %s: spec.vtep %q: %v", id, be.Spec.VTEP, err)
		}
		ep.VTEP = v.Unmap()
	}
	return ep, nil
}

func translateBGP(bc *nbv1.BridgeConfig, in Inputs) (*BGP, []string) {
	var problems []string
	spec := bc.Spec.BGP
	b := &BGP{LocalASN: uint32(spec.LocalASN), StandbyPrepend: uint8(spec.StandbyPrepend), HostRoutes: true}
	if spec.RouterID != "" {
		if a, err := netip.ParseAddr(spec.RouterID); err == nil {
			b.RouterID = a
		}
	} else if in.LocalVTEP.Is4() {
		b.RouterID = in.LocalVTEP
	}
	if adv := bc.Spec.Advertise; adv != nil {
		b.HostRoutes = adv.HostRoutes
		b.Aggregate = adv.Aggregate
		b.Communities = adv.Communities
		b.LargeCommunities = adv.LargeCommunities
		if adv.MED != nil {
			m := uint32(*adv.MED)
			b.MED = &m
		}
	}
	for _, p := range spec.Peers {
		if p.NodeSelector != nil {
			sel, err := metav1.LabelSelectorAsSelector(p.NodeSelector)
			if err != nil {
				problems = append(problems, fmt.Sprintf("bridgeconfig %s: peer %s: nodeSelector: %v", bc.Name, p.Address, err))
				continue
			}
			if !sel.Matches(labels.Set(in.NodeLabels)) {
				continue
			}
		}
		addr, err := netip.ParseAddr(p.Address)
		if err != nil {
			problems = append(problems, fmt.Sprintf("bridgeconfig %s: peers[].address %q: %v", bc.Name, p.Address, err))
			continue
		}
		peer := Peer{Address: addr, ASN: uint32(p.ASN), Port: uint16(p.Port), EBGPMultihop: uint8(p.EBGPMultihop), Description: p.Description}
		if p.HoldTime != nil {
			peer.HoldTime = time.Duration(*p.HoldTime) * time.Second
		}
		if p.Keepalive != nil {
			peer.Keepalive = time.Duration(*p.Keepalive) * time.Second
		}
		if gr := p.GracefulRestart; gr != nil && gr.Enabled {
			peer.GracefulRestart = true
			peer.RestartTime = time.Duration(gr.RestartTime) * time.Second
		}
		if p.PasswordSecretRef != nil {
			if in.Password == nil {
				problems = append(problems, fmt.Sprintf("bridgeconfig %s: peer %s: passwordSecretRef set but no secrets available", bc.Name, p.Address))
				continue
			}
			pw, err := in.Password(*p.PasswordSecretRef)
			if err != nil {
				// Without its password the session cannot come up: leave
				// the peer out rather than flap it with a wrong one.
				problems = append(problems, fmt.Sprintf("bridgeconfig %s: peer %s: password: %v", bc.Name, p.Address, err))
				continue
			}
			peer.Password = pw
		}
		b.Peers = append(b.Peers, peer)
	}
	return b, problems
}

// parseLargeCommunity parses "G:L1:L2".
func parseLargeCommunity(s string) (g, l1, l2 uint32, err error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return 0, 0, 0, fmt.Errorf("large community %q: want G:L1:L2", s)
	}
	var v [3]uint32
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return 0, 0, 0, fmt.Errorf("large community %q: %w", s, err)
		}
		v[i] = uint32(n)
	}
	return v[0], v[1], v[2], nil
}
