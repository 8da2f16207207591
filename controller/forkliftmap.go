package controller

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller/forklift"
	"github.com/netbridge-io/netbridge/controller/kubevirt"
)

// indexVMIPlan indexes VMIs by Forklift's plan label (the Plan's UID).
const indexVMIPlan = "netbridge.io/vmi-forklift-plan"

func vmiPlan(obj client.Object) []string {
	if uid := obj.GetLabels()[forklift.LabelPlan]; uid != "" {
		return []string{uid}
	}
	return nil
}

// forkliftMapping reads, from the cache, every Plan, every NetworkMap's
// Multus destinations and netbridge's own NADs.
func forkliftMapping(ctx context.Context, c client.Reader) (forklift.Mapping, error) {
	m := forklift.Mapping{Plans: map[types.UID]forklift.Plan{}, Destinations: map[string][]string{}, NADs: map[string]nbv1.SegmentKey{}}
	plans := forklift.NewList(forklift.PlanGVK)
	if err := c.List(ctx, plans); err != nil {
		return m, fmt.Errorf("list forklift plans: %w", err)
	}
	for i := range plans.Items {
		p := forklift.PlanFrom(&plans.Items[i])
		m.Plans[p.UID] = p
	}
	maps := forklift.NewList(forklift.NetworkMapGVK)
	if err := c.List(ctx, maps); err != nil {
		return m, fmt.Errorf("list forklift networkmaps: %w", err)
	}
	for i := range maps.Items {
		u := &maps.Items[i]
		m.Destinations[u.GetNamespace()+"/"+u.GetName()] = forklift.NetworkMapDestinations(u)
	}
	nads := newNADList()
	if err := c.List(ctx, nads, client.HasLabels{nbv1.LabelBridgeConfig, nbv1.LabelSegmentName}); err != nil {
		return m, fmt.Errorf("list network attachment definitions: %w", err)
	}
	for i := range nads.Items {
		u := &nads.Items[i]
		bc := u.GetLabels()[nbv1.LabelBridgeConfig]
		if ownsNAD(u, bc) {
			m.NADs[u.GetNamespace()+"/"+u.GetName()] = SegmentKey{BridgeConfig: bc, Segment: u.GetLabels()[nbv1.LabelSegmentName]}
		}
	}
	return m, nil
}

// forkliftVMIs are the VMIs of Forklift Plans that join segment key through
// their NetworkMap, with the interface that does. A VMI with the segment
// label is the label's: it is not listed here.
func forkliftVMIs(ctx context.Context, c client.Reader, key SegmentKey) (map[*unstructured.Unstructured]string, error) {
	m, err := forkliftMapping(ctx, c)
	if err != nil {
		return nil, err
	}
	out := map[*unstructured.Unstructured]string{}
	for uid, p := range m.Plans {
		relevant := false
		for _, d := range m.Destinations[p.NetworkMap] {
			if m.NADs[d] == key {
				relevant = true
			}
		}
		if !relevant {
			continue
		}
		vmis := kubevirt.NewList()
		if err := c.List(ctx, vmis, client.MatchingFields{indexVMIPlan: string(uid)}); err != nil {
			return nil, fmt.Errorf("list vmis of forklift plan %s: %w", uid, err)
		}
		for i := range vmis.Items {
			u := &vmis.Items[i]
			if _, labelled := u.GetLabels()[nbv1.LabelSegment]; labelled {
				continue
			}
			v, err := kubevirt.FromUnstructured(u)
			if err != nil {
				continue // the segment reconciler logs unreadable VMIs it owns
			}
			if k, iface, ok := forklift.Resolve(v, m); ok && k == key {
				out[u] = iface
			}
		}
	}
	return out, nil
}

// forkliftSegments maps a VMI without the segment label to the segment its
// Plan's NetworkMap gives it (none when it has none).
func forkliftSegments(ctx context.Context, c client.Reader, o client.Object) []SegmentKey {
	u, ok := o.(*unstructured.Unstructured)
	if !ok || u.GetLabels()[forklift.LabelPlan] == "" {
		return nil
	}
	v, err := kubevirt.FromUnstructured(u)
	if err != nil {
		return nil
	}
	m, err := forkliftMapping(ctx, c)
	if err != nil {
		return nil
	}
	if k, _, ok := forklift.Resolve(v, m); ok {
		return []SegmentKey{k}
	}
	return nil
}
