package controller

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

// nadReconciler keeps the NetworkAttachmentDefinitions of one BridgeConfig
// (request name) in step with its segments and reports foreign ones.
type nadReconciler struct {
	client   client.Client
	recorder events.EventRecorder
	metrics  *metrics
	log      logr.Logger
	now      func() time.Time
}

func (r *nadReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	res, err := r.reconcile(ctx, req.Name)
	if err != nil {
		r.metrics.reconcileErrors.WithLabelValues("networkattachment").Inc()
	}
	return res, err
}

func (r *nadReconciler) reconcile(ctx context.Context, name string) (reconcile.Result, error) {
	log := r.log.WithValues("bridgeconfig", name)
	in, bc, err := r.observe(ctx, name)
	if err != nil {
		return reconcile.Result{}, err
	}
	plan := planNADs(in)
	retry, err := r.apply(ctx, log, plan)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("network attachments of bridgeconfig %s: %w", name, err)
	}
	if bc != nil {
		if err := r.report(ctx, log, bc, plan.Conflicts); err != nil {
			if apierrors.IsConflict(err) {
				retry = true
			} else {
				return reconcile.Result{}, err
			}
		}
	}
	if retry {
		return reconcile.Result{RequeueAfter: 100 * time.Millisecond}, nil
	}
	return reconcile.Result{}, nil
}

// observe reads the BridgeConfig, the namespaces and the relevant NADs
// from the cache; bc is nil when the BridgeConfig is gone or going.
func (r *nadReconciler) observe(ctx context.Context, name string) (NADInput, *nbv1.BridgeConfig, error) {
	in := NADInput{Name: name, Existing: map[string]*unstructured.Unstructured{}}
	var bc nbv1.BridgeConfig
	err := r.client.Get(ctx, client.ObjectKey{Name: name}, &bc)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return in, nil, fmt.Errorf("get bridgeconfig %s: %w", name, err)
	case bc.DeletionTimestamp.IsZero():
		in.Config = &bc
	}

	owned := newNADList()
	if err := r.client.List(ctx, owned, client.MatchingLabels{nbv1.LabelBridgeConfig: name}); err != nil {
		return in, nil, fmt.Errorf("list network attachment definitions of %s: %w", name, err)
	}
	for i := range owned.Items {
		u := &owned.Items[i]
		in.Existing[u.GetNamespace()+"/"+u.GetName()] = u
	}
	if in.Config == nil {
		return in, nil, nil
	}

	var nss corev1.NamespaceList
	if err := r.client.List(ctx, &nss, unsafeList); err != nil {
		return in, nil, fmt.Errorf("list namespaces: %w", err)
	}
	in.Namespaces = make(map[string]labels.Set, len(nss.Items))
	for i := range nss.Items {
		ns := &nss.Items[i]
		if ns.DeletionTimestamp.IsZero() && ns.Status.Phase != corev1.NamespaceTerminating {
			in.Namespaces[ns.Name] = ns.Labels
		}
	}
	// Foreign NADs under a wanted name: they must be seen to be reported.
	for i := range bc.Spec.Segments {
		s := &bc.Spec.Segments[i]
		nadName := nbv1.NetworkAttachmentName(SegmentKey{BridgeConfig: name, Segment: s.Name}, s)
		for ns := range in.Namespaces {
			id := ns + "/" + nadName
			if _, ok := in.Existing[id]; ok {
				continue
			}
			u := newNAD()
			err := r.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: nadName}, u)
			switch {
			case apierrors.IsNotFound(err):
			case err != nil:
				return in, nil, fmt.Errorf("get network attachment definition %s: %w", id, err)
			default:
				in.Existing[id] = u
			}
		}
	}
	return in, &bc, nil
}

// apply sends the plan; retry=true when a write raced the cache.
func (r *nadReconciler) apply(ctx context.Context, log logr.Logger, plan NADPlan) (bool, error) {
	retry := false
	for _, u := range plan.Create {
		if err := r.client.Create(ctx, u); err != nil {
			if apierrors.IsAlreadyExists(err) {
				retry = true
				continue
			}
			return false, fmt.Errorf("create network attachment definition %s/%s: %w", u.GetNamespace(), u.GetName(), err)
		}
		r.metrics.writes.WithLabelValues("createNetworkAttachment").Inc()
		log.Info("network attachment created", "event", "networkAttachmentCreated", "namespace", u.GetNamespace(), "name", u.GetName())
	}
	for _, u := range plan.Update {
		if err := r.client.Update(ctx, u); err != nil {
			if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
				retry = true
				continue
			}
			return false, fmt.Errorf("update network attachment definition %s/%s: %w", u.GetNamespace(), u.GetName(), err)
		}
		r.metrics.writes.WithLabelValues("updateNetworkAttachment").Inc()
		log.Info("network attachment updated", "event", "networkAttachmentUpdated", "namespace", u.GetNamespace(), "name", u.GetName())
	}
	for _, u := range plan.Delete {
		uid := u.GetUID()
		err := r.client.Delete(ctx, u, client.Preconditions{UID: &uid})
		if err != nil && !apierrors.IsNotFound(err) {
			if apierrors.IsConflict(err) {
				retry = true
				continue
			}
			return false, fmt.Errorf("delete network attachment definition %s/%s: %w", u.GetNamespace(), u.GetName(), err)
		}
		r.metrics.writes.WithLabelValues("deleteNetworkAttachment").Inc()
		log.Info("network attachment deleted", "event", "networkAttachmentDeleted", "namespace", u.GetNamespace(), "name", u.GetName())
	}
	return retry, nil
}

// report sets the NetworkAttachmentConflict condition of the BridgeConfig
// and, when the conflicts change, a Warning event naming them.
func (r *nadReconciler) report(ctx context.Context, log logr.Logger, bc *nbv1.BridgeConfig, conflicts []string) error {
	c := metav1.Condition{Type: nbv1.ConditionNetworkAttachmentConflict, Status: metav1.ConditionFalse,
		Reason: nbv1.ReasonNoNetworkAttachmentConflict, Message: "every NetworkAttachmentDefinition of the segments is netbridge's",
		ObservedGeneration: bc.Generation, LastTransitionTime: metav1.NewTime(r.now())}
	if len(conflicts) > 0 {
		c.Status, c.Reason = metav1.ConditionTrue, nbv1.ReasonForeignNetworkAttachment
		c.Message = "not written: " + strings.Join(conflicts, "; ")
	}
	prev := meta.FindStatusCondition(bc.Status.Conditions, c.Type)
	if prev != nil && prev.Status == c.Status && prev.Reason == c.Reason && prev.Message == c.Message && prev.ObservedGeneration == c.ObservedGeneration {
		return nil
	}
	meta.SetStatusCondition(&bc.Status.Conditions, c)
	if err := r.client.Status().Update(ctx, bc); err != nil {
		return fmt.Errorf("update bridgeconfig status %s: %w", bc.Name, err)
	}
	r.metrics.writes.WithLabelValues("updateConfigStatus").Inc()
	if prev == nil || prev.Message != c.Message {
		if len(conflicts) > 0 {
			r.recorder.Eventf(bc, nil, corev1.EventTypeWarning, nbv1.ReasonForeignNetworkAttachment, "Reconcile", "%s", c.Message)
		}
		log.Info("network attachment conflicts", "event", "networkAttachmentConflicts", "conflict", c.Status, "message", c.Message)
	}
	return nil
}
