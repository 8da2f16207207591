package controller

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sync/errgroup"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller/kubevirt"
	"github.com/netbridge-io/netbridge/internal/config"
)

// SegmentKey is the unit of work of the endpoint reconciler (conflicts are
// decided per segment); the contract itself lives in the API package.
type SegmentKey = nbv1.SegmentKey

// Field index names.
const (
	indexVMISegment      = "netbridge.io/vmi-segment"
	indexVMINode         = "netbridge.io/vmi-node"
	indexEndpointSegment = "netbridge.io/endpoint-segment"
)

type segmentReconciler struct {
	client    client.Client // cache-backed reads, direct writes
	namespace string
	recorder  events.EventRecorder
	metrics   *metrics
	log       logr.Logger
	// writeParallelism bounds concurrent writes within one segment.
	writeParallelism int
	cacheWait        time.Duration
	now              func() time.Time
	// limits bound the semantic checks (zero: the documented defaults).
	limits config.Limits
	// nodeReadiness: report endpoints on nodes without the segment's
	// readiness label.
	nodeReadiness bool
	// forklift: VMIs created by a Forklift Plan join the segment its
	// NetworkMap maps their network to, without the segment label.
	forklift bool
	// expect holds creates the cache has not shown yet (never nil).
	expect *createExpectations
}

var unsafeList = client.UnsafeDisableDeepCopy

func (r *segmentReconciler) Reconcile(ctx context.Context, key SegmentKey) (reconcile.Result, error) {
	log := r.log.WithValues("bridgeconfig", key.BridgeConfig, "segment", key.Segment)
	in, err := r.observe(ctx, key)
	if err != nil {
		r.metrics.reconcileErrors.WithLabelValues("segment").Inc()
		return reconcile.Result{}, err
	}
	plan := PlanSegment(in)
	if in.Segment == nil {
		r.metrics.deleteSegment(key)
	} else {
		r.metrics.setSegment(key, plan.Counts)
	}
	// Endpoints created by an earlier pass that the cache does not show
	// yet are not created again: look once more shortly instead (wall
	// clock: the cache's lag is real time, whatever r.now says).
	held := r.expect.hold(key, &plan, in.Existing, time.Now())
	if held > 0 {
		log.V(1).Info("creates held until the cache shows them", "event", "createsHeld", "held", held)
	}
	if plan.Empty() {
		if held > 0 {
			return reconcile.Result{RequeueAfter: 250 * time.Millisecond}, nil
		}
		return reconcile.Result{}, nil
	}
	retry, err := r.apply(ctx, log, key, plan)
	if err != nil {
		r.metrics.reconcileErrors.WithLabelValues("segment").Inc()
		return reconcile.Result{}, fmt.Errorf("segment %s: %w", key, err)
	}
	log.V(1).Info("segment reconciled", "event", "segmentReconciled", "created", len(plan.Create), "updated", len(plan.Update),
		"statusUpdated", len(plan.UpdateStatus), "deleted", len(plan.Delete), "events", len(plan.Events))
	if retry || held > 0 {
		// A stale cache raced a write (AlreadyExists / Conflict): look again soon.
		return reconcile.Result{RequeueAfter: 100 * time.Millisecond}, nil
	}
	return reconcile.Result{}, nil
}

// observe reads everything PlanSegment needs from the informer cache.
func (r *segmentReconciler) observe(ctx context.Context, key SegmentKey) (SegmentInput, error) {
	in := SegmentInput{BridgeConfig: key.BridgeConfig, Now: metav1.NewTime(r.now()), Limits: r.limits}

	var eps nbv1.BridgeEndpointList
	if err := r.client.List(ctx, &eps, client.MatchingFields{indexEndpointSegment: key.String()}, unsafeList); err != nil {
		return in, fmt.Errorf("list endpoints of segment %s: %w", key, err)
	}
	for i := range eps.Items {
		in.Existing = append(in.Existing, &eps.Items[i])
	}

	var bc nbv1.BridgeConfig
	if err := r.client.Get(ctx, client.ObjectKey{Name: key.BridgeConfig}, &bc, unsafeList); err != nil {
		if apierrors.IsNotFound(err) {
			return in, nil
		}
		return in, fmt.Errorf("get bridgeconfig %s: %w", key.BridgeConfig, err)
	}
	for i := range bc.Spec.Segments {
		if bc.Spec.Segments[i].Name == key.Segment {
			in.Segment = &bc.Spec.Segments[i]
		}
	}
	if in.Segment == nil || !bc.DeletionTimestamp.IsZero() {
		in.Segment = nil
		return in, nil
	}

	verdicts, err := checkAllConfigs(ctx, r.client, r.limits)
	if err != nil {
		return in, err
	}
	if v := verdicts[bc.Name]; v.Reason != "" {
		in.Refused = v.Reason + ": " + v.Message
	}

	vmis := kubevirt.NewList()
	if err := r.client.List(ctx, vmis, client.MatchingFields{indexVMISegment: key.String()}, unsafeList); err != nil {
		return in, fmt.Errorf("list vmis of segment %s: %w", key, err)
	}
	items := make([]*unstructured.Unstructured, 0, len(vmis.Items))
	for i := range vmis.Items {
		items = append(items, &vmis.Items[i])
	}
	ifaces := map[*unstructured.Unstructured]string{}
	if r.forklift {
		fk, err := forkliftVMIs(ctx, r.client, key)
		if err != nil {
			return in, err
		}
		for u, iface := range fk {
			items = append(items, u)
			ifaces[u] = iface
		}
	}
	in.NamespaceLabels = map[string]labels.Set{}
	in.VTEPs = map[string]string{}
	in.VTEPErrors = map[string]string{}
	for _, u := range items {
		if !u.GetDeletionTimestamp().IsZero() {
			continue // going away: withdraw now rather than when it is gone
		}
		v, err := kubevirt.FromUnstructured(u)
		if err != nil {
			r.log.Error(err, "skip unreadable VMI", "event", "vmiUnreadable", "namespace", u.GetNamespace(), "vmi", u.GetName())
			continue
		}
		v.SegmentInterface = ifaces[u]
		in.VMIs = append(in.VMIs, v)
		if _, ok := in.NamespaceLabels[v.Namespace]; !ok {
			var ns corev1.Namespace
			if err := r.client.Get(ctx, client.ObjectKey{Name: v.Namespace}, &ns, unsafeList); err != nil && !apierrors.IsNotFound(err) {
				return in, fmt.Errorf("get namespace %s: %w", v.Namespace, err)
			}
			in.NamespaceLabels[v.Namespace] = ns.Labels
		}
	}
	nodes := map[string]bool{}
	for _, v := range in.VMIs {
		nodes[v.Status.NodeName] = true
	}
	for _, e := range in.Existing {
		nodes[e.Spec.NodeName] = true
	}
	if r.nodeReadiness {
		in.NodeReady = map[string]bool{}
	}
	for n := range nodes {
		if n == "" {
			continue
		}
		if in.NodeReady != nil {
			ready, err := nodeSegmentReady(ctx, r.client, n, key)
			if err != nil {
				return in, err
			}
			in.NodeReady[n] = ready
		}
		vtep, bad, err := nodeVTEP(ctx, r.client, n)
		if err != nil {
			return in, err
		}
		if bad != nil {
			in.VTEPErrors[n] = bad.Error()
			continue
		}
		in.VTEPs[n] = vtep
	}

	gw, err := r.gatewayView(ctx, key)
	if err != nil {
		return in, err
	}
	in.Gateway = gw
	return in, nil
}

// nodeVTEP reads a node's VTEP: "" for an unknown node or one without an
// address yet; bad is the node's own fault (an unusable annotation), which
// the plan reports on the node's endpoints; err is a failed read.
func nodeVTEP(ctx context.Context, c client.Reader, name string) (vtep string, bad, err error) {
	var node corev1.Node
	if err := c.Get(ctx, client.ObjectKey{Name: name}, &node, unsafeList); err != nil {
		if apierrors.IsNotFound(err) {
			return "", nil, nil
		}
		return "", nil, fmt.Errorf("get node %s: %w", name, err)
	}
	a, bad := nbv1.NodeVTEP(&node)
	if bad != nil || !a.IsValid() {
		return "", bad, nil
	}
	return a.String(), nil, nil
}

// nodeSegmentReady: the node carries the segment's readiness label.
func nodeSegmentReady(ctx context.Context, c client.Reader, name string, key SegmentKey) (bool, error) {
	var node corev1.Node
	if err := c.Get(ctx, client.ObjectKey{Name: name}, &node, unsafeList); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("get node %s: %w", name, err)
	}
	return node.Labels[nbv1.SegmentReadyLabel(key)] == nbv1.SegmentReadyValue, nil
}

// vtepOf is a node's VTEP as text for change detection: the address, or
// the error that names a bad annotation.
func vtepOf(node *corev1.Node) string {
	a, err := nbv1.NodeVTEP(node)
	if err != nil {
		return err.Error()
	}
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// gatewayView reads the segment's Lease and its holder's BridgeGateway.
func (r *segmentReconciler) gatewayView(ctx context.Context, key SegmentKey) (*GatewayView, error) {
	holder, _, err := leaseHolder(ctx, r.client, r.namespace, key)
	if err != nil || holder == "" {
		return nil, err
	}
	view := &GatewayView{Name: holder}
	var gw nbv1.BridgeGateway
	if err := r.client.Get(ctx, client.ObjectKey{Name: holder}, &gw, unsafeList); err != nil {
		if apierrors.IsNotFound(err) {
			return view, nil
		}
		return nil, fmt.Errorf("get bridgegateway %s: %w", holder, err)
	}
	view.Advertised = make(map[string]bool, len(gw.Status.Advertised))
	for _, p := range gw.Status.Advertised {
		view.Advertised[p] = true
	}
	view.Endpoints = make(map[string]nbv1.GatewayEndpointStatus, len(gw.Status.Endpoints))
	for _, e := range gw.Status.Endpoints {
		view.Endpoints[e.Namespace+"/"+e.Name] = e
	}
	view.Refused = map[string][]nbv1.RefusedEndpoint{}
	for _, e := range gw.Status.Refused {
		k := e.Namespace + "/" + e.Endpoint
		view.Refused[k] = append(view.Refused[k], e)
	}
	return view, nil
}

// leaseHolder returns the holder of the segment Lease and when it expires.
func leaseHolder(ctx context.Context, c client.Reader, namespace string, key SegmentKey) (string, time.Time, error) {
	var lease coordinationv1.Lease
	name := nbv1.LeaseName(key)
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &lease, unsafeList); err != nil {
		if apierrors.IsNotFound(err) {
			return "", time.Time{}, nil
		}
		return "", time.Time{}, fmt.Errorf("get lease %s/%s: %w", namespace, name, err)
	}
	if lease.Spec.HolderIdentity == nil {
		return "", time.Time{}, nil
	}
	var expiry time.Time
	if lease.Spec.RenewTime != nil && lease.Spec.LeaseDurationSeconds != nil {
		expiry = lease.Spec.RenewTime.Add(time.Duration(*lease.Spec.LeaseDurationSeconds) * time.Second)
	}
	return *lease.Spec.HolderIdentity, expiry, nil
}

// checkAllConfigs validates every BridgeConfig of the cache and runs the
// cross-BridgeConfig checks over the valid ones.
func checkAllConfigs(ctx context.Context, c client.Reader, lim config.Limits) (map[string]Verdict, error) {
	var bcs nbv1.BridgeConfigList
	if err := c.List(ctx, &bcs, unsafeList); err != nil {
		return nil, fmt.Errorf("list bridgeconfigs: %w", err)
	}
	ptrs := make([]*nbv1.BridgeConfig, 0, len(bcs.Items))
	for i := range bcs.Items {
		if bcs.Items[i].DeletionTimestamp.IsZero() {
			ptrs = append(ptrs, &bcs.Items[i])
		}
	}
	var nl []labels.Set
	if len(ptrs) > 1 {
		var nodes corev1.NodeList
		if err := c.List(ctx, &nodes, unsafeList); err != nil {
			return nil, fmt.Errorf("list nodes: %w", err)
		}
		nl = make([]labels.Set, 0, len(nodes.Items))
		for i := range nodes.Items {
			nl = append(nl, nodes.Items[i].Labels)
		}
	}
	return configVerdicts(ptrs, nl, lim), nil
}

// apply sends the plan. It returns retry=true when a write lost a race with
// the cache (AlreadyExists, Conflict), which a short requeue resolves.
func (r *segmentReconciler) apply(ctx context.Context, log logr.Logger, key SegmentKey, plan SegmentPlan) (bool, error) {
	var retry atomic.Bool
	// The latest version we wrote of each endpoint (spec, then status).
	written := map[string]*nbv1.BridgeEndpoint{}
	var writtenMu sync.Mutex
	record := func(ep *nbv1.BridgeEndpoint) {
		writtenMu.Lock()
		written[ep.Namespace+"/"+ep.Name] = ep.DeepCopy()
		writtenMu.Unlock()
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.writeParallelism)

	for _, ep := range plan.Create {
		g.Go(func() error {
			conds := ep.Status.Conditions
			if err := r.client.Create(gctx, ep); err != nil {
				if apierrors.IsAlreadyExists(err) {
					// It exists (an earlier pass, or the previous leader): do
					// not POST it again before the cache shows it, then adopt.
					r.expect.expect(key, ep.Namespace+"/"+ep.Name, time.Now())
					retry.Store(true)
					return nil
				}
				return fmt.Errorf("create endpoint %s/%s: %w", ep.Namespace, ep.Name, err)
			}
			r.expect.expect(key, ep.Namespace+"/"+ep.Name, time.Now())
			r.metrics.writes.WithLabelValues("create").Inc()
			log.V(1).Info("endpoint created", "event", "endpointCreated", "namespace", ep.Namespace, "endpoint", ep.Name, "state", ep.Spec.State)
			if len(conds) > 0 {
				ep.Status.Conditions = conds
				ep.Status.ObservedGeneration = ep.Generation
				if err := r.client.Status().Update(gctx, ep); err != nil {
					if apierrors.IsConflict(err) {
						retry.Store(true)
						return nil
					}
					return fmt.Errorf("update endpoint status %s/%s: %w", ep.Namespace, ep.Name, err)
				}
				r.metrics.writes.WithLabelValues("updateStatus").Inc()
			}
			record(ep)
			return nil
		})
	}
	for _, ep := range plan.Update {
		g.Go(func() error {
			if err := r.client.Update(gctx, ep); err != nil {
				if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
					retry.Store(true)
					return nil
				}
				return fmt.Errorf("update endpoint %s/%s: %w", ep.Namespace, ep.Name, err)
			}
			r.metrics.writes.WithLabelValues("update").Inc()
			log.V(1).Info("endpoint updated", "event", "endpointUpdated", "namespace", ep.Namespace, "endpoint", ep.Name, "state", ep.Spec.State, "node", ep.Spec.NodeName)
			record(ep)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return false, err
	}

	// Status after spec: a spec update bumped the resourceVersion. Read
	// written before any status write starts: those record into it.
	for _, ep := range plan.UpdateStatus {
		if w, ok := written[ep.Namespace+"/"+ep.Name]; ok {
			ep.ResourceVersion = w.ResourceVersion
		}
	}
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(r.writeParallelism)
	for _, ep := range plan.UpdateStatus {
		g.Go(func() error {
			if err := r.client.Status().Update(gctx, ep); err != nil {
				if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
					retry.Store(true)
					return nil
				}
				return fmt.Errorf("update endpoint status %s/%s: %w", ep.Namespace, ep.Name, err)
			}
			r.metrics.writes.WithLabelValues("updateStatus").Inc()
			record(ep)
			return nil
		})
	}
	for _, ep := range plan.Delete {
		g.Go(func() error {
			err := r.client.Delete(gctx, ep, client.Preconditions{UID: &ep.UID})
			if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				return fmt.Errorf("delete endpoint %s/%s: %w", ep.Namespace, ep.Name, err)
			}
			r.metrics.writes.WithLabelValues("delete").Inc()
			log.V(1).Info("endpoint deleted", "event", "endpointDeleted", "namespace", ep.Namespace, "endpoint", ep.Name)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return false, err
	}
	for _, ev := range plan.Events {
		ref := ev.Regarding
		r.recorder.Eventf(&ref, nil, ev.Type, ev.Reason, "Reconcile", "%s", ev.Message)
		log.Info("endpoint refused", "event", "endpointRefused", "namespace", ref.Namespace, "vmi", ref.Name, "reason", ev.Reason, "message", ev.Message)
	}
	latest := make([]*nbv1.BridgeEndpoint, 0, len(written))
	for _, ep := range written {
		latest = append(latest, ep)
	}
	r.waitForCache(ctx, latest, plan.Delete)
	return retry.Load(), nil
}

// waitForCache blocks until the informer has seen our own writes, so that
// the next reconcile of this segment (often queued already by a VMI event)
// does not plan from a stale cache and repeat them.
func (r *segmentReconciler) waitForCache(ctx context.Context, written, deleted []*nbv1.BridgeEndpoint) {
	deadline := time.Now().Add(r.cacheWait)
	caughtUp := func(ep *nbv1.BridgeEndpoint, gone bool) bool {
		var cur nbv1.BridgeEndpoint
		err := r.client.Get(ctx, client.ObjectKeyFromObject(ep), &cur, unsafeList)
		if gone {
			return apierrors.IsNotFound(err) || (err == nil && cur.UID != ep.UID)
		}
		return err == nil && cur.ResourceVersion == ep.ResourceVersion
	}
	for _, set := range []struct {
		eps  []*nbv1.BridgeEndpoint
		gone bool
	}{{written, false}, {deleted, true}} {
		for _, ep := range set.eps {
			for !caughtUp(ep, set.gone) {
				if time.Now().After(deadline) || ctx.Err() != nil {
					return
				}
				time.Sleep(2 * time.Millisecond)
			}
		}
	}
}

// vmiSegment is the indexer of VMIs by segment label.
func vmiSegment(obj client.Object) []string {
	if v, ok := obj.GetLabels()[nbv1.LabelSegment]; ok {
		if k, err := nbv1.ParseSegmentKey(v); err == nil {
			return []string{k.String()}
		}
	}
	return nil
}

// vmiNode is the indexer of VMIs by status.nodeName.
func vmiNode(obj client.Object) []string {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil
	}
	n, _, _ := unstructured.NestedString(u.Object, "status", "nodeName")
	if n == "" {
		return nil
	}
	return []string{n}
}

// endpointSegment is the indexer of endpoints by segment.
func endpointSegment(obj client.Object) []string {
	ep, ok := obj.(*nbv1.BridgeEndpoint)
	if !ok || ep.Spec.BridgeConfig == "" || ep.Spec.Segment == "" {
		return nil
	}
	return []string{SegmentKey{BridgeConfig: ep.Spec.BridgeConfig, Segment: ep.Spec.Segment}.String()}
}
