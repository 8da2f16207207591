package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

// Per-segment node readiness: the node agent reports each segment's
// bridge programmed (or not) in its BridgeGateway status; the controller
// mirrors that onto the node as nbv1.SegmentReadyLabel, which VMs' node
// affinity selects. The agent needs no write access to Node objects: a
// compromised VM node cannot label other nodes ready and attract VMs.

// readySegments is the label keys a node should carry: the segments that
// exist and that the node's agent reports programmed, while the node is
// not NotReady. The agent writes its report only on change, so a dead
// agent's report looks current; the node's Ready condition (Unknown once
// the kubelet stops posting, False when it fails) is the freshness rule.
// A node with no Ready condition yet is judged by the report alone.
func readySegments(node *corev1.Node, gw *nbv1.BridgeGateway, segments map[SegmentKey]bool) map[string]bool {
	out := map[string]bool{}
	if gw == nil || kubeletNotReady(node) {
		return out
	}
	for _, s := range gw.Status.Segments {
		k := SegmentKey{BridgeConfig: s.BridgeConfig, Segment: s.Name}
		if s.Programmed && s.Error == "" && segments[k] {
			out[nbv1.SegmentReadyLabel(k)] = true
		}
	}
	return out
}

// kubeletNotReady: the node's Ready condition is there and not True.
func kubeletNotReady(node *corev1.Node) bool {
	if node == nil {
		return false
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status != corev1.ConditionTrue
		}
	}
	return false
}

// planNodeLabels is the merge patch of a node's labels (value nil:
// remove) that leaves exactly the wanted readiness labels, each "ready";
// other labels are never touched. Empty: nothing to write.
func planNodeLabels(current map[string]string, want map[string]bool) map[string]*string {
	patch := map[string]*string{}
	for k := range current {
		if nbv1.IsSegmentReadyLabel(k) && !want[k] {
			patch[k] = nil
		}
	}
	ready := nbv1.SegmentReadyValue
	for k := range want {
		if current[k] != ready {
			patch[k] = &ready
		}
	}
	return patch
}

// nodeReadyReconciler keeps one node's readiness labels (request name).
type nodeReadyReconciler struct {
	client  client.Client
	metrics *metrics
	log     logr.Logger
}

func (r *nodeReadyReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	if err := r.reconcile(ctx, req.Name); err != nil {
		r.metrics.reconcileErrors.WithLabelValues("nodereadiness").Inc()
		return reconcile.Result{}, err
	}
	return reconcile.Result{}, nil
}

func (r *nodeReadyReconciler) reconcile(ctx context.Context, name string) error {
	var node corev1.Node
	if err := r.client.Get(ctx, client.ObjectKey{Name: name}, &node, unsafeList); err != nil {
		return client.IgnoreNotFound(err)
	}
	var gwp *nbv1.BridgeGateway
	var gw nbv1.BridgeGateway
	switch err := r.client.Get(ctx, client.ObjectKey{Name: name}, &gw, unsafeList); {
	case apierrors.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("get bridgegateway %s: %w", name, err)
	default:
		if gw.Spec.NodeName == name {
			gwp = &gw
		}
	}
	segs, err := allSegments(ctx, r.client)
	if err != nil {
		return err
	}
	patch := planNodeLabels(node.Labels, readySegments(&node, gwp, segs))
	if len(patch) == 0 {
		return nil
	}
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": patch}})
	if err != nil {
		return fmt.Errorf("node %s label patch: %w", name, err)
	}
	if err := r.client.Patch(ctx, &corev1.Node{ObjectMeta: node.ObjectMeta}, client.RawPatch(types.MergePatchType, body)); err != nil {
		return fmt.Errorf("patch node %s readiness labels: %w", name, client.IgnoreNotFound(err))
	}
	r.metrics.writes.WithLabelValues("patchNodeLabels").Inc()
	keys := make([]string, 0, len(patch))
	for k, v := range patch {
		if v == nil {
			keys = append(keys, "-"+k)
		} else {
			keys = append(keys, "+"+k)
		}
	}
	sort.Strings(keys)
	r.log.Info("node segment readiness", "event", "nodeSegmentReadiness", "node", name, "labels", keys)
	return nil
}

// allSegments is the set of segments of the BridgeConfigs not being deleted.
func allSegments(ctx context.Context, c client.Reader) (map[SegmentKey]bool, error) {
	var bcs nbv1.BridgeConfigList
	if err := c.List(ctx, &bcs, unsafeList); err != nil {
		return nil, fmt.Errorf("list bridgeconfigs: %w", err)
	}
	out := map[SegmentKey]bool{}
	for _, bc := range bcs.Items {
		if !bc.DeletionTimestamp.IsZero() {
			continue
		}
		for _, s := range bc.Spec.Segments {
			out[SegmentKey{BridgeConfig: bc.Name, Segment: s.Name}] = true
		}
	}
	return out, nil
}
