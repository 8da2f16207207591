package controller

import (
	"context"

	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller/kubevirt"
)

// segmentMapper maps watched objects to the segments they can affect,
// reading the cache (lookups are by index or over the few BridgeConfigs).
type segmentMapper struct {
	cache     cache.Cache
	namespace string
	// forklift: VMIs of Forklift Plans map through their NetworkMap.
	forklift bool
}

func (m *segmentMapper) vmi(ctx context.Context, o client.Object) []SegmentKey {
	if k, err := nbv1.ParseSegmentKey(o.GetLabels()[nbv1.LabelSegment]); err == nil {
		return []SegmentKey{k}
	}
	if m.forklift {
		return forkliftSegments(ctx, m.cache, o)
	}
	return nil
}

// nad: the segment a netbridge NAD belongs to (a NAD appearing or going
// changes which Forklift VMIs the segment has).
func (m *segmentMapper) nad(_ context.Context, o client.Object) []SegmentKey {
	l := o.GetLabels()
	if l[nbv1.LabelBridgeConfig] == "" || l[nbv1.LabelSegmentName] == "" {
		return nil
	}
	return []SegmentKey{{BridgeConfig: l[nbv1.LabelBridgeConfig], Segment: l[nbv1.LabelSegmentName]}}
}

func (m *segmentMapper) endpoint(_ context.Context, o client.Object) []SegmentKey {
	ep, ok := o.(*nbv1.BridgeEndpoint)
	if !ok || ep.Spec.BridgeConfig == "" || ep.Spec.Segment == "" {
		return nil
	}
	return []SegmentKey{{BridgeConfig: ep.Spec.BridgeConfig, Segment: ep.Spec.Segment}}
}

// config: the segments of this config (a removed segment must delete its
// endpoints) and of every other config, whose verdict may change with it.
func (m *segmentMapper) config(ctx context.Context, o client.Object) []SegmentKey {
	out := m.all(ctx, nil)
	if bc, ok := o.(*nbv1.BridgeConfig); ok {
		for _, s := range bc.Spec.Segments {
			out = append(out, SegmentKey{BridgeConfig: bc.Name, Segment: s.Name})
		}
	}
	return out
}

// all lists the segments of every BridgeConfig accepted by keep (nil: all).
func (m *segmentMapper) all(ctx context.Context, keep func(*nbv1.Segment) bool) []SegmentKey {
	var bcs nbv1.BridgeConfigList
	if err := m.cache.List(ctx, &bcs, unsafeList); err != nil {
		return nil
	}
	var out []SegmentKey
	for _, bc := range bcs.Items {
		for i := range bc.Spec.Segments {
			if keep == nil || keep(&bc.Spec.Segments[i]) {
				out = append(out, SegmentKey{BridgeConfig: bc.Name, Segment: bc.Spec.Segments[i].Name})
			}
		}
	}
	return out
}

// node: segments with VMIs on it (VTEP), and all segments when its labels
// may change which gateway selectors overlap.
func (m *segmentMapper) node(ctx context.Context, o client.Object) []SegmentKey {
	out := m.all(ctx, nil)
	vmis := kubevirt.NewList()
	if err := m.cache.List(ctx, vmis, client.MatchingFields{indexVMINode: o.GetName()}, unsafeList); err != nil {
		return out
	}
	seen := map[SegmentKey]bool{}
	for _, k := range out {
		seen[k] = true
	}
	for i := range vmis.Items {
		if k, err := nbv1.ParseSegmentKey(vmis.Items[i].GetLabels()[nbv1.LabelSegment]); err == nil && !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}

func (m *segmentMapper) ns(ctx context.Context, _ client.Object) []SegmentKey {
	return m.all(ctx, func(s *nbv1.Segment) bool { return s.NamespaceSelector != nil })
}

func (m *segmentMapper) lease(ctx context.Context, o client.Object) []SegmentKey {
	if o.GetNamespace() != m.namespace {
		return nil
	}
	if k, err := nbv1.ParseLeaseName(o.GetName()); err == nil {
		return []SegmentKey{k}
	}
	// Hashed names (keys the API refuses) have no inverse: look them up.
	var out []SegmentKey
	for _, k := range m.all(ctx, nil) {
		if nbv1.LeaseName(k) == o.GetName() {
			out = append(out, k)
		}
	}
	return out
}

func (m *segmentMapper) gateway(_ context.Context, o client.Object) []SegmentKey {
	gw, ok := o.(*nbv1.BridgeGateway)
	if !ok {
		return nil
	}
	seen := map[SegmentKey]bool{}
	var out []SegmentKey
	add := func(k SegmentKey) {
		if k.BridgeConfig != "" && k.Segment != "" && !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	for _, s := range gw.Status.Segments {
		add(SegmentKey{BridgeConfig: s.BridgeConfig, Segment: s.Name})
	}
	for _, e := range gw.Status.Endpoints {
		add(SegmentKey{BridgeConfig: e.BridgeConfig, Segment: e.Segment})
	}
	return out
}

// configMapper maps watched objects to BridgeConfig requests.
type configMapper struct {
	segments *segmentMapper
}

func toConfigs(keys []SegmentKey) []reconcile.Request {
	seen := map[string]bool{}
	var out []reconcile.Request
	for _, k := range keys {
		if !seen[k.BridgeConfig] {
			seen[k.BridgeConfig] = true
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKey{Name: k.BridgeConfig}})
		}
	}
	return out
}

func (m *configMapper) config(ctx context.Context, o client.Object) []reconcile.Request {
	return append(m.allConfigs(ctx, o), reconcile.Request{NamespacedName: client.ObjectKey{Name: o.GetName()}})
}

func (m *configMapper) allConfigs(ctx context.Context, _ client.Object) []reconcile.Request {
	return toConfigs(m.segments.all(ctx, nil))
}

func (m *configMapper) endpoint(ctx context.Context, o client.Object) []reconcile.Request {
	return toConfigs(m.segments.endpoint(ctx, o))
}

func (m *configMapper) lease(ctx context.Context, o client.Object) []reconcile.Request {
	return toConfigs(m.segments.lease(ctx, o))
}

func (m *configMapper) gateway(ctx context.Context, o client.Object) []reconcile.Request {
	return toConfigs(m.segments.gateway(ctx, o))
}
