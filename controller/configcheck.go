package controller

import (
	"fmt"
	"net/netip"
	"sort"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/internal/config"
)

// Reasons of a BridgeConfig's Ready condition.
const (
	ReasonValid         = "Valid"
	ReasonVLANConflict  = "VLANConflict"
	ReasonVNIConflict   = "VNIConflict"
	ReasonSubnetOverlap = "SubnetOverlap"
	// ReasonInvalidSpec: config.Parse refused the spec; the message names
	// every field and value it refused.
	ReasonInvalidSpec = "InvalidSpec"
)

// maxVerdictMessage keeps a condition message readable (the API allows
// 32 KiB); the first errors name the fields to fix.
const maxVerdictMessage = 2048

// configVerdicts validates each config on its own (config.Parse), then runs
// the cross-object checks over the valid ones: an invalid config is never
// programmed and blocks nobody.
func configVerdicts(bcs []*nbv1.BridgeConfig, nodes []labels.Set, lim config.Limits) map[string]Verdict {
	out := make(map[string]Verdict, len(bcs))
	valid := make([]*nbv1.BridgeConfig, 0, len(bcs))
	for _, bc := range bcs {
		if _, errs := config.ParseWithLimits(bc.Name, bc.Spec, lim); len(errs) > 0 {
			msg := errs.ToAggregate().Error()
			if len(msg) > maxVerdictMessage {
				msg = msg[:maxVerdictMessage] + "…"
			}
			out[bc.Name] = Verdict{Reason: ReasonInvalidSpec, Message: msg}
			continue
		}
		valid = append(valid, bc)
	}
	for name, v := range CheckBridgeConfigs(valid, nodes) {
		out[name] = v
	}
	return out
}

// Verdict is the outcome of the cross-BridgeConfig checks for one config.
type Verdict struct {
	// Reason is "" when the config is accepted.
	Reason  string
	Message string
}

// CheckBridgeConfigs runs the checks that span objects, on configs that
// config.Parse accepted: the same VLAN or VNI on overlapping gateway nodes, and
// overlapping subnets. Configs are taken in creation order (then name); a
// config is refused when it clashes with an earlier accepted one, so the
// earlier one stays Ready and a refused config blocks nobody. nodes are the
// labels of every Node, used to decide whether two gateway selectors
// overlap.
func CheckBridgeConfigs(bcs []*nbv1.BridgeConfig, nodes []labels.Set) map[string]Verdict {
	sorted := append([]*nbv1.BridgeConfig(nil), bcs...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i], sorted[j]
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		return a.Name < b.Name
	})
	out := make(map[string]Verdict, len(sorted))
	var accepted []*nbv1.BridgeConfig
	for _, bc := range sorted {
		v := checkAgainst(bc, accepted, nodes)
		out[bc.Name] = v
		if v.Reason == "" {
			accepted = append(accepted, bc)
		}
	}
	return out
}

func checkAgainst(bc *nbv1.BridgeConfig, accepted []*nbv1.BridgeConfig, nodes []labels.Set) Verdict {
	for _, other := range accepted {
		for _, s := range bc.Spec.Segments {
			for _, o := range other.Spec.Segments {
				if overlapping(s.Subnets, o.Subnets) {
					return Verdict{Reason: ReasonSubnetOverlap, Message: fmt.Sprintf(
						"segment %s subnets %v overlap segment %s subnets %v of BridgeConfig %s", s.Name, s.Subnets, o.Name, o.Subnets, other.Name)}
				}
			}
		}
		// Selector overlap needs a walk over the nodes: only when needed.
		var shared *bool
		sharesGateways := func() bool {
			if shared == nil {
				v := selectorsOverlap(&bc.Spec.GatewaySelector, &other.Spec.GatewaySelector, nodes)
				shared = &v
			}
			return *shared
		}
		for _, s := range bc.Spec.Segments {
			for _, o := range other.Spec.Segments {
				if s.VLANID == o.VLANID && sharesGateways() {
					return Verdict{Reason: ReasonVLANConflict, Message: fmt.Sprintf(
						"segment %s VLAN %d is already bridged by segment %s of BridgeConfig %s on the same gateway nodes", s.Name, s.VLANID, o.Name, other.Name)}
				}
				if s.VNI == o.VNI && sharesGateways() {
					return Verdict{Reason: ReasonVNIConflict, Message: fmt.Sprintf(
						"segment %s VNI %d is already used by segment %s of BridgeConfig %s on the same gateway nodes", s.Name, s.VNI, o.Name, other.Name)}
				}
			}
		}
	}
	return Verdict{}
}

// selectorsOverlap: identical selectors overlap even before any node
// exists; otherwise they overlap when some node matches both.
func selectorsOverlap(a, b *metav1.LabelSelector, nodes []labels.Set) bool {
	if equality.Semantic.DeepEqual(a, b) {
		return true
	}
	sa, errA := metav1.LabelSelectorAsSelector(a)
	sb, errB := metav1.LabelSelectorAsSelector(b)
	if errA != nil || errB != nil {
		return false
	}
	for _, n := range nodes {
		if sa.Matches(n) && sb.Matches(n) {
			return true
		}
	}
	return false
}

// overlapping compares the subnets of two segments config.Parse accepted
// (so every one parses).
func overlapping(a, b []string) bool {
	for _, x := range a {
		px, errX := netip.ParsePrefix(x)
		for _, y := range b {
			py, errY := netip.ParsePrefix(y)
			if errX == nil && errY == nil && px.Overlaps(py) {
				return true
			}
		}
	}
	return false
}

// prefixOf is a.b.c.d/32 (or /128) for an address.
func prefixOf(a netip.Addr) string {
	return netip.PrefixFrom(a, a.BitLen()).String()
}
