package gateway

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/bgp"
	"github.com/netbridge-io/netbridge/internal/config"
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
	// Problems found while reading the inputs (e.g. a node's unusable
	// VTEP annotation).
	Problems []string
}

// NodeInfo is what the agent needs of a Node.
type NodeInfo struct {
	Labels map[string]string
	VTEP   netip.Addr
}

// translate turns the inputs into this host's desired state. Every
// BridgeConfig goes through the one validation path (internal/config): a
// config with any error is never programmed, and its errors, naming the
// field and the value, become problems. A bad segment carries its Error,
// a bad peer or endpoint is left out and reported in problems.
func translate(in Inputs) (d Desired, problems []string) {
	problems = slices.Clone(in.Problems)
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
	segs := map[SegmentKey]*config.Segment{}
	for i := range configs {
		bc := &configs[i]
		cfg, errs := config.Parse(bc.Name, bc.Spec)
		if len(errs) > 0 {
			problems = append(problems, fmt.Sprintf("bridgeconfig %s: refused: %v", bc.Name, errs.ToAggregate()))
			continue
		}
		if msg, refused := controllerRefused(bc); refused {
			problems = append(problems, fmt.Sprintf("bridgeconfig %s: refused by the controller: %s", bc.Name, msg))
			continue
		}
		if in.Role == RoleGateway {
			if !cfg.GatewaySelector.Matches(labels.Set(in.NodeLabels)) {
				continue
			}
			if d.BGP == nil && cfg.BGP != nil {
				b, probs := translateBGP(cfg, in)
				problems = append(problems, probs...)
				d.BGP = b
			} else if cfg.BGP != nil {
				problems = append(problems, fmt.Sprintf("bridgeconfig %s: bgp ignored on node %s, another BridgeConfig already configures BGP here", bc.Name, in.NodeName))
			}
		}
		candidates := candidatesFor(cfg, in)
		for i := range cfg.Segments {
			cs := &cfg.Segments[i]
			seg := translateSegment(cs, in.Role, candidates)
			if other, taken := vniOwner[seg.VNI]; taken {
				seg.Error = fmt.Sprintf("segment %s: vni %d already used on this node by segment %s", cs.Key, seg.VNI, other)
			} else {
				vniOwner[seg.VNI] = cs.Key
			}
			if holder := in.LeaseHolders[cs.Key]; holder != "" {
				seg.ActiveGatewayVTEP = in.Nodes[holder].VTEP
			}
			segs[cs.Key] = cs
			d.Segments = append(d.Segments, seg)
		}
	}
	for _, be := range in.Endpoints {
		k := SegmentKey{BridgeConfig: be.Spec.BridgeConfig, Segment: be.Spec.Segment}
		seg, ok := segs[k]
		if !ok {
			continue
		}
		ep, err := translateEndpoint(be, seg)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		d.Endpoints = append(d.Endpoints, ep)
	}
	sort.Slice(d.Endpoints, func(i, j int) bool { return d.Endpoints[i].ID() < d.Endpoints[j].ID() })
	d.NodeVTEPs = nodeVTEPs(in, d.Endpoints)
	return d, problems
}

// nodeVTEPs are the VTEPs of the known nodes and of the endpoints, but
// this host's own, sorted.
func nodeVTEPs(in Inputs, eps []Endpoint) []netip.Addr {
	set := map[netip.Addr]bool{}
	for _, n := range in.Nodes {
		set[n.VTEP] = true
	}
	for _, e := range eps {
		set[e.VTEP] = true
	}
	delete(set, in.LocalVTEP)
	delete(set, netip.Addr{})
	return sortedAddrs(set)
}

// controllerRefused: in Kubernetes mode the controller's verdict on the
// current generation counts too (cross-object clashes, e.g. a VLAN another
// BridgeConfig claims first). No verdict yet is no refusal.
func controllerRefused(bc *nbv1.BridgeConfig) (string, bool) {
	c := meta.FindStatusCondition(bc.Status.Conditions, nbv1.ConditionReady)
	if c == nil || c.Status != metav1.ConditionFalse || c.ObservedGeneration != bc.Generation {
		return "", false
	}
	return c.Reason + ": " + c.Message, true
}

// keepLastValid replaces each BridgeConfig that is refused now (its spec
// does not validate, or the controller refused this generation) by the
// last version that was valid, so a bad edit never tears down what works;
// it is reported instead. valid is the last valid version of each name;
// the returned map replaces it.
func keepLastValid(configs []nbv1.BridgeConfig, valid map[string]nbv1.BridgeConfig) ([]nbv1.BridgeConfig, map[string]nbv1.BridgeConfig, []string) {
	out := make([]nbv1.BridgeConfig, 0, len(configs))
	next := map[string]nbv1.BridgeConfig{}
	var problems []string
	for _, bc := range configs {
		_, errs := config.Parse(bc.Name, bc.Spec)
		msg, refused := controllerRefused(&bc)
		if len(errs) > 0 {
			msg, refused = errs.ToAggregate().Error(), true
		}
		if !refused {
			out = append(out, bc)
			next[bc.Name] = bc
			continue
		}
		last, ok := valid[bc.Name]
		if !ok {
			out = append(out, bc) // never valid: translate refuses it
			continue
		}
		problems = append(problems, fmt.Sprintf("bridgeconfig %s: generation %d refused (%s): keeping generation %d in force",
			bc.Name, bc.Generation, msg, last.Generation))
		out = append(out, last)
		next[bc.Name] = last
	}
	return out, next, problems
}

func translateSegment(cs *config.Segment, role Role, candidates []string) Segment {
	seg := Segment{Key: cs.Key, VLANID: cs.VLANID, VNI: cs.VNI, Access: cs.Access, MTU: cs.MTU, Phase: Phase(cs.Phase),
		Subnets: slices.Clone(cs.Subnets), GatewayAddress: cs.GatewayAddress, Candidates: candidates, Uplink: cs.Uplink.Interface,
		LocalEgress: cs.Egress == nbv1.EgressLocal}
	for _, c := range cs.Communities {
		seg.Communities = append(seg.Communities, bgp.Community(c))
	}
	if seg.Uplink == "" && role == RoleGateway {
		seg.Error = fmt.Sprintf("segment %s: uplink selection by address (%s) is not supported by this agent yet; set uplink.interface", cs.Key, cs.Uplink.Address)
	}
	return seg
}

// candidatesFor lists the gateway nodes selected by a BridgeConfig, this
// node first when it is one.
func candidatesFor(cfg *config.BridgeConfig, in Inputs) []string {
	var out []string
	for name, n := range in.Nodes {
		if cfg.GatewaySelector.Matches(labels.Set(n.Labels)) {
			out = append(out, name)
		}
	}
	if in.Role == RoleGateway && !slices.Contains(out, in.NodeName) {
		out = append(out, in.NodeName)
	}
	sort.Strings(out)
	return out
}

// translateEndpoint validates an endpoint through the one path; whether
// its IPs fit the segment is decided by the plan (config.CheckEndpointIP),
// so that a refused IP is reported, not dropped.
func translateEndpoint(be nbv1.BridgeEndpoint, _ *config.Segment) (Endpoint, error) {
	ce, errs := config.ParseEndpoint(be.Namespace, be.Name, be.Spec)
	if len(errs) > 0 {
		return Endpoint{}, fmt.Errorf("endpoint %s/%s: %w", be.Namespace, be.Name, errs.ToAggregate())
	}
	return Endpoint{Namespace: ce.Namespace, Name: ce.Name, Segment: ce.Segment, IPs: ce.IPs, MAC: ce.MAC,
		NodeName: ce.NodeName, VTEP: ce.VTEP, State: EndpointState(ce.State)}, nil
}

func translateBGP(cfg *config.BridgeConfig, in Inputs) (*BGP, []string) {
	var problems []string
	spec := cfg.BGP
	b := &BGP{LocalASN: spec.LocalASN, RouterID: spec.RouterID, StandbyPrepend: spec.StandbyPrepend,
		HostRoutes: cfg.Advertise.HostRoutes, Aggregate: cfg.Advertise.Aggregate, MED: cfg.Advertise.MED}
	if !b.RouterID.IsValid() && in.LocalVTEP.Is4() {
		b.RouterID = in.LocalVTEP
	}
	for _, c := range cfg.Advertise.Communities {
		b.Communities = append(b.Communities, bgp.Community(c))
	}
	for _, c := range cfg.Advertise.LargeCommunities {
		b.LargeCommunities = append(b.LargeCommunities, bgp.LargeCommunity{Global: c.Global, Local1: c.Local1, Local2: c.Local2})
	}
	for _, p := range spec.Peers {
		if p.NodeSelector != nil && !p.NodeSelector.Matches(labels.Set(in.NodeLabels)) {
			continue
		}
		peer := Peer{Address: p.Address, ASN: p.ASN, Port: p.Port, EBGPMultihop: p.EBGPMultihop, Description: p.Description,
			HoldTime: p.HoldTime, Keepalive: p.Keepalive, GracefulRestart: p.GracefulRestart, RestartTime: p.RestartTime}
		if p.BFD != nil {
			peer.BFD = &bgp.BFD{MinRx: p.BFD.MinReceive, MinTx: p.BFD.MinTransmit, Multiplier: p.BFD.Multiplier}
		}
		if p.PasswordSecretRef != nil {
			if in.Password == nil {
				problems = append(problems, fmt.Sprintf("bridgeconfig %s: peer %s: passwordSecretRef set but no secrets available", cfg.Name, p.Address))
				continue
			}
			pw, err := in.Password(*p.PasswordSecretRef)
			if err != nil {
				// Without its password the session cannot come up: leave
				// the peer out rather than flap it with a wrong one.
				problems = append(problems, fmt.Sprintf("bridgeconfig %s: peer %s: password: %v", cfg.Name, p.Address, err))
				continue
			}
			peer.Password = pw
		}
		b.Peers = append(b.Peers, peer)
	}
	return b, problems
}
