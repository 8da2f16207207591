package controller

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/internal/config"
)

// SegmentObservation is what the status of one segment is computed from.
type SegmentObservation struct {
	ActiveGateway   string
	StandbyGateways []string
	Counts          nbv1.EndpointCounts
}

// DesiredConfigStatus computes a BridgeConfig's status from the verdict of
// the cross-object checks and the per-segment observations. Conditions keep
// their transition time when their status does not change.
func DesiredConfigStatus(bc *nbv1.BridgeConfig, v Verdict, segs map[string]SegmentObservation, now metav1.Time) nbv1.BridgeConfigStatus {
	st := nbv1.BridgeConfigStatus{ObservedGeneration: bc.Generation}
	active := map[string]bool{}
	for _, s := range bc.Spec.Segments {
		o := segs[s.Name]
		st.Segments = append(st.Segments, nbv1.SegmentStatus{
			Name:            s.Name,
			ActiveGateway:   o.ActiveGateway,
			StandbyGateways: o.StandbyGateways,
			Endpoints:       o.Counts,
		})
		st.EndpointCount += o.Counts.Staged + o.Counts.Active + o.Counts.Withdrawn
		if o.ActiveGateway != "" {
			active[o.ActiveGateway] = true
		}
	}
	names := make([]string, 0, len(active))
	for n := range active {
		names = append(names, n)
	}
	sort.Strings(names)
	st.ActiveGateways = strings.Join(names, ",")

	ready := metav1.Condition{Type: nbv1.ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonValid,
		Message: "spec valid, no conflict with other BridgeConfigs", ObservedGeneration: bc.Generation, LastTransitionTime: now}
	if v.Reason != "" {
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, v.Reason, v.Message
	}
	for _, c := range bc.Status.Conditions {
		st.Conditions = append(st.Conditions, *c.DeepCopy())
	}
	meta.SetStatusCondition(&st.Conditions, ready)
	return st
}

type configReconciler struct {
	client    client.Client
	namespace string
	metrics   *metrics
	log       logr.Logger
	now       func() time.Time
	// limits bound the semantic checks (zero: the documented defaults).
	limits config.Limits
}

func (r *configReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	res, err := r.reconcile(ctx, req.Name)
	if err != nil {
		r.metrics.reconcileErrors.WithLabelValues("bridgeconfig").Inc()
	}
	return res, err
}

func (r *configReconciler) reconcile(ctx context.Context, name string) (reconcile.Result, error) {
	var bc nbv1.BridgeConfig
	if err := r.client.Get(ctx, client.ObjectKey{Name: name}, &bc); err != nil {
		if apierrors.IsNotFound(err) {
			r.metrics.configReady.DeleteLabelValues(name)
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("get bridgeconfig %s: %w", name, err)
	}
	verdicts, err := checkAllConfigs(ctx, r.client, r.limits)
	if err != nil {
		return reconcile.Result{}, err
	}
	v := verdicts[name]

	var gws nbv1.BridgeGatewayList
	if err := r.client.List(ctx, &gws, unsafeList); err != nil {
		return reconcile.Result{}, fmt.Errorf("list bridgegateways: %w", err)
	}
	standby := map[string][]string{}
	for _, gw := range gws.Items {
		for _, s := range gw.Status.Segments {
			if s.BridgeConfig == name && nbv1.SegmentRole(s.Role) == nbv1.SegmentRoleStandby {
				standby[s.Name] = append(standby[s.Name], gw.Name)
			}
		}
	}

	now := r.now()
	var requeue time.Duration
	segs := map[string]SegmentObservation{}
	for _, s := range bc.Spec.Segments {
		key := SegmentKey{BridgeConfig: name, Segment: s.Name}
		holder, expiry, err := leaseHolder(ctx, r.client, r.namespace, key)
		if err != nil {
			return reconcile.Result{}, err
		}
		// An expired lease names nobody; look again when it would expire.
		if holder != "" && !expiry.IsZero() {
			if !expiry.After(now) {
				holder = ""
			} else if d := expiry.Sub(now) + 100*time.Millisecond; requeue == 0 || d < requeue {
				requeue = d
			}
		}
		counts, err := countEndpoints(ctx, r.client, key)
		if err != nil {
			return reconcile.Result{}, err
		}
		sb := standby[s.Name]
		sort.Strings(sb)
		segs[s.Name] = SegmentObservation{ActiveGateway: holder, StandbyGateways: sb, Counts: counts}
	}

	want := DesiredConfigStatus(&bc, v, segs, metav1.NewTime(now))
	if v.Reason == "" {
		r.metrics.configReady.WithLabelValues(name).Set(1)
	} else {
		r.metrics.configReady.WithLabelValues(name).Set(0)
	}
	if equality.Semantic.DeepEqual(want, bc.Status) {
		return reconcile.Result{RequeueAfter: requeue}, nil
	}
	prevReady := meta.FindStatusCondition(bc.Status.Conditions, nbv1.ConditionReady)
	bc.Status = want
	if err := r.client.Status().Update(ctx, &bc); err != nil {
		if apierrors.IsConflict(err) {
			return reconcile.Result{RequeueAfter: 100 * time.Millisecond}, nil
		}
		return reconcile.Result{}, fmt.Errorf("update bridgeconfig status %s: %w", name, err)
	}
	r.metrics.writes.WithLabelValues("updateConfigStatus").Inc()
	if nowReady := meta.FindStatusCondition(want.Conditions, nbv1.ConditionReady); prevReady == nil || prevReady.Status != nowReady.Status || prevReady.Reason != nowReady.Reason {
		r.log.Info("bridgeconfig readiness", "event", "bridgeConfigReady", "bridgeconfig", name,
			"ready", nowReady.Status, "reason", nowReady.Reason, "message", nowReady.Message)
	}
	return reconcile.Result{RequeueAfter: requeue}, nil
}

// countEndpoints counts a segment's endpoints by state from the cache.
func countEndpoints(ctx context.Context, c client.Reader, key SegmentKey) (nbv1.EndpointCounts, error) {
	var eps nbv1.BridgeEndpointList
	var counts nbv1.EndpointCounts
	if err := c.List(ctx, &eps, client.MatchingFields{indexEndpointSegment: key.String()}, unsafeList); err != nil {
		return counts, fmt.Errorf("list endpoints of segment %s: %w", key, err)
	}
	for i := range eps.Items {
		e := &eps.Items[i]
		refused := meta.IsStatusConditionTrue(e.Status.Conditions, nbv1.ConditionConflict) ||
			meta.IsStatusConditionTrue(e.Status.Conditions, nbv1.ConditionRejected)
		count(&counts, e.Spec.State, refused)
	}
	return counts, nil
}
