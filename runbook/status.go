package runbook

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

// StatusReport is what `netbridgectl status` prints.
type StatusReport struct {
	Segments  []SegmentRow  `json:"segments"`
	Gateways  []GatewayRow  `json:"gateways"`
	Endpoints []EndpointRow `json:"endpoints"`
}

// SegmentRow is one segment of one BridgeConfig.
type SegmentRow struct {
	Segment         string              `json:"segment"`
	VLAN            int32               `json:"vlan"`
	VNI             int32               `json:"vni"`
	Phase           string              `json:"phase"`
	ActiveGateway   string              `json:"activeGateway,omitempty"`
	StandbyGateways []string            `json:"standbyGateways,omitempty"`
	Endpoints       nbv1.EndpointCounts `json:"endpoints"`
}

// GatewayRow is one BridgeGateway.
type GatewayRow struct {
	Name       string                   `json:"name"`
	Role       string                   `json:"role,omitempty"`
	Ready      string                   `json:"ready"`
	Segments   []string                 `json:"segments,omitempty"`
	Peers      []nbv1.GatewayPeerStatus `json:"peers,omitempty"`
	Advertised []string                 `json:"advertised,omitempty"`
	ObservedAt *metav1.Time             `json:"observedAt,omitempty"`
}

// EndpointRow is one BridgeEndpoint (one VM interface).
type EndpointRow struct {
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	VM        string   `json:"vm"`
	Segment   string   `json:"segment"`
	IPs       []string `json:"ips,omitempty"`
	MAC       string   `json:"mac,omitempty"`
	Node      string   `json:"node,omitempty"`
	State     string   `json:"state"`
	// Advertised is the endpoint's Advertised condition status (True/False/Unknown).
	Advertised string `json:"advertised"`
	// Reason says why an endpoint is refused or not advertised.
	Reason string `json:"reason,omitempty"`
}

// Status builds the status report from a snapshot.
func Status(s *Snapshot) StatusReport {
	r := StatusReport{Segments: []SegmentRow{}, Gateways: []GatewayRow{}, Endpoints: []EndpointRow{}}
	for _, bc := range s.BridgeConfigs {
		for _, seg := range bc.Spec.Segments {
			ref := SegmentRef{BridgeConfig: bc.Name, Segment: seg.Name}
			row := SegmentRow{
				Segment:         ref.String(),
				VLAN:            seg.VLANID,
				VNI:             seg.VNI,
				Phase:           string(seg.Phase),
				ActiveGateway:   s.ActiveGateway(ref),
				StandbyGateways: s.StandbyGateways(ref),
			}
			if row.Phase == "" {
				row.Phase = string(nbv1.PhaseExtended)
			}
			if _, _, st := s.Segment(ref); st != nil {
				row.Endpoints = st.Endpoints
			}
			r.Segments = append(r.Segments, row)
		}
	}
	for _, gw := range s.Gateways {
		row := GatewayRow{
			Name:       gw.Name,
			Role:       string(gw.Spec.Role),
			Ready:      "Unknown",
			Peers:      gw.Status.Peers,
			Advertised: gw.Status.Advertised,
			ObservedAt: gw.Status.ObservedAt,
		}
		if c := condition(gw.Status.Conditions, nbv1.ConditionReady); c != nil {
			row.Ready = string(c.Status)
		}
		for _, seg := range gw.Status.Segments {
			desc := fmt.Sprintf("%s.%s:%s", seg.BridgeConfig, seg.Name, seg.Role)
			if !seg.Programmed {
				desc += "(not programmed)"
			}
			row.Segments = append(row.Segments, desc)
		}
		r.Gateways = append(r.Gateways, row)
	}
	for i := range s.Endpoints {
		ep := &s.Endpoints[i]
		row := EndpointRow{
			Namespace:  ep.Namespace,
			Name:       ep.Name,
			VM:         ep.Spec.VMI,
			Segment:    endpointSegment(ep).String(),
			IPs:        ep.Spec.IPs,
			MAC:        ep.Spec.MAC,
			Node:       ep.Spec.NodeName,
			State:      string(ep.Spec.State),
			Advertised: "Unknown",
			Reason:     s.endpointReason(ep),
		}
		if row.State == "" {
			row.State = string(nbv1.StateStaged)
		}
		if c := condition(ep.Status.Conditions, nbv1.ConditionAdvertised); c != nil {
			row.Advertised = string(c.Status)
		}
		r.Endpoints = append(r.Endpoints, row)
	}
	return r
}

// endpointReason explains why an endpoint is refused or not advertised, in
// the order an operator acts on it: the controller's refusals first, then
// the gateways'.
func (s *Snapshot) endpointReason(ep *nbv1.BridgeEndpoint) string {
	var reasons []string
	for _, typ := range []string{nbv1.ConditionConflict, nbv1.ConditionRejected} {
		if c, ok := conditionTrue(ep.Status.Conditions, typ); ok {
			reasons = append(reasons, conditionText(typ, c))
		}
	}
	refs := s.Refusals(ep.Namespace, ep.Name)
	for _, r := range refs {
		reasons = append(reasons, r.String())
	}
	if c := condition(ep.Status.Conditions, nbv1.ConditionAdvertised); c != nil && c.Status == metav1.ConditionFalse && c.Reason != "" && len(refs) == 0 {
		reasons = append(reasons, conditionText(nbv1.ConditionAdvertised, c))
	}
	return strings.Join(reasons, "; ")
}

// conditionText reads "Conflict: IPClaimed: 10.20.100.10 is claimed by default/vm2".
func conditionText(typ string, c *metav1.Condition) string {
	parts := []string{typ}
	if c.Reason != "" && c.Reason != typ {
		parts = append(parts, c.Reason)
	}
	if c.Message != "" {
		parts = append(parts, c.Message)
	}
	return strings.Join(parts, ": ")
}
