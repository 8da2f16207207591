package controller

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlcontroller "sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller/forklift"
	"github.com/netbridge-io/netbridge/controller/kubevirt"
	"github.com/netbridge-io/netbridge/internal/kubeclient"
	"github.com/netbridge-io/netbridge/internal/verify"
)

// autoCutoverReconciler runs cutoverPolicy AfterMigration, keyed by VMI:
// it reads the VMI, its endpoints, their segments' policy, the active
// gateways' reports and the Forklift Migration, plans with the pure
// PlanAutoCutover, and writes the VMI's cutover annotation (and its own
// record) — the segment reconciler does the rest, as for a person's
// `netbridgectl cutover`.
type autoCutoverReconciler struct {
	client    client.Client
	namespace string
	recorder  events.EventRecorder
	metrics   *metrics
	log       logr.Logger
	now       func() time.Time
}

func (r *autoCutoverReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	u := kubevirt.NewObject()
	if err := r.client.Get(ctx, req.NamespacedName, u); err != nil {
		if apierrors.IsNotFound(err) {
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("get virtualmachineinstance %s: %w", req.NamespacedName, err)
	}
	if u.GetLabels()[forklift.LabelPlan] == "" {
		return reconcile.Result{}, nil
	}
	log := r.log.WithValues("vmi", req.NamespacedName.String())
	v, err := kubevirt.FromUnstructured(u)
	if err != nil {
		return reconcile.Result{}, nil // the segment reconciler reports unreadable VMIs
	}
	rec, err := nbv1.ParseAutoCutover(v.Annotations[nbv1.AnnotationAutoCutover])
	if err != nil {
		log.Info("auto-cutover record unreadable, VMI left alone", "event", "autoCutoverRecordInvalid", "error", err.Error())
		return reconcile.Result{}, nil
	}
	in := AutoCutoverInput{VMI: v, Record: rec, Now: r.now()}
	if err := r.observeEndpoints(ctx, &in); err != nil {
		return reconcile.Result{}, err
	}
	if rec == nil && in.AfterMigration {
		if err := r.observeMigration(ctx, &in); err != nil {
			return reconcile.Result{}, err
		}
	}
	if rec != nil && in.VerifyTimeout == 0 {
		in.VerifyTimeout = nbv1.DefaultVerifyTimeout
	}
	act := PlanAutoCutover(in)
	if act.Record != nil {
		ann := map[string]string{nbv1.AnnotationAutoCutover: act.Record.String()}
		if act.Cutover != "" {
			ann[nbv1.AnnotationCutover] = act.Cutover
		}
		if err := kubevirt.PatchAnnotations(ctx, r.client, req.NamespacedName, ann); err != nil {
			return reconcile.Result{}, fmt.Errorf("auto-cutover %s of virtualmachineinstance %s: %w", act.Record.State, req.NamespacedName, err)
		}
		log.Info("automatic cutover", "event", "autoCutover", "state", string(act.Record.State), "reason", act.Record.Reason,
			"migration", act.Record.Migration, "cutover", act.Cutover)
	}
	if ev := act.Event; ev != nil {
		r.recorder.Eventf(&ev.Regarding, nil, ev.Type, ev.Reason, "AutoCutover", "%s", ev.Message)
		if act.Record != nil {
			r.metrics.countAutoCutover(in.Segments, act.Record.State)
		}
	}
	return reconcile.Result{RequeueAfter: act.RequeueAfter}, nil
}

// observeEndpoints fills the policy and each endpoint's verify verdict.
func (r *autoCutoverReconciler) observeEndpoints(ctx context.Context, in *AutoCutoverInput) error {
	var eps nbv1.BridgeEndpointList
	if err := r.client.List(ctx, &eps, client.InNamespace(in.VMI.Namespace)); err != nil {
		return fmt.Errorf("list bridgeendpoints in %s: %w", in.VMI.Namespace, err)
	}
	configs := map[string]*nbv1.BridgeConfig{}
	for i := range eps.Items {
		ep := &eps.Items[i]
		if ep.Spec.VMI != in.VMI.Name {
			continue
		}
		bc, ok := configs[ep.Spec.BridgeConfig]
		if !ok {
			bc = &nbv1.BridgeConfig{}
			if err := r.client.Get(ctx, client.ObjectKey{Name: ep.Spec.BridgeConfig}, bc); err != nil {
				if !apierrors.IsNotFound(err) {
					return fmt.Errorf("get bridgeconfig %s: %w", ep.Spec.BridgeConfig, err)
				}
				bc = nil
			}
			configs[ep.Spec.BridgeConfig] = bc
		}
		seg := segmentOf(bc, ep.Spec.Segment)
		if seg == nil {
			continue
		}
		key := SegmentKey{BridgeConfig: ep.Spec.BridgeConfig, Segment: ep.Spec.Segment}
		if seg.CutoverPolicy == nbv1.CutoverAfterMigration {
			in.AfterMigration = true
			if t := seg.VerifyTimeoutOrDefault(); t > in.VerifyTimeout {
				in.VerifyTimeout = t
			}
			if !slices.Contains(in.Segments, key) {
				in.Segments = append(in.Segments, key)
			}
		}
		holder, _, err := leaseHolder(ctx, r.client, r.namespace, key)
		if err != nil {
			return err
		}
		var gw *nbv1.BridgeGateway
		if holder != "" {
			gw = &nbv1.BridgeGateway{}
			if err := r.client.Get(ctx, client.ObjectKey{Name: holder}, gw); err != nil {
				if !apierrors.IsNotFound(err) {
					return fmt.Errorf("get bridgegateway %s: %w", holder, err)
				}
				gw = nil
			}
		}
		res := verify.Endpoint(verify.Input{Endpoint: ep, Segment: key.String(), ActiveGateway: holder, Gateway: gw,
			Config: bc, Spec: seg})
		refused := meta.IsStatusConditionTrue(ep.Status.Conditions, nbv1.ConditionConflict) || meta.IsStatusConditionTrue(ep.Status.Conditions, nbv1.ConditionRejected)
		in.Endpoints = append(in.Endpoints, AutoCutoverEndpoint{Name: ep.Name, State: ep.Spec.State, Check: res, Refused: refused})
	}
	return nil
}

func segmentOf(bc *nbv1.BridgeConfig, name string) *nbv1.Segment {
	if bc == nil {
		return nil
	}
	for i := range bc.Spec.Segments {
		if bc.Spec.Segments[i].Name == name {
			return &bc.Spec.Segments[i]
		}
	}
	return nil
}

// observeMigration finds the VM's status in its Forklift Migration: the
// one whose UID the VMI's migration label names, else the newest one of
// the VMI's Plan that lists the VM.
func (r *autoCutoverReconciler) observeMigration(ctx context.Context, in *AutoCutoverInput) error {
	migs := forklift.NewList(forklift.MigrationGVK)
	if err := r.client.List(ctx, migs); err != nil {
		return fmt.Errorf("list forklift migrations: %w", err)
	}
	planName, err := r.planName(ctx, types.UID(in.VMI.Labels[forklift.LabelPlan]))
	if err != nil {
		return err
	}
	var newest time.Time
	for i := range migs.Items {
		u := &migs.Items[i]
		m := forklift.MigrationFrom(u)
		byUID := string(m.UID) == in.VMI.Labels[forklift.LabelMigration]
		if !byUID && (planName == "" || m.Plan != planName) {
			continue
		}
		vm, ok := m.VM(in.VMI.Labels[forklift.LabelVMID], in.VMI.Name)
		if !ok {
			continue
		}
		if created := u.GetCreationTimestamp().Time; byUID || in.VM == nil || created.After(newest) {
			in.Migration, in.VM, newest = m.Name, ptr.To(vm), created
			if byUID {
				return nil
			}
		}
	}
	return nil
}

// planName is "namespace/name" of the Plan with uid ("" when unknown).
func (r *autoCutoverReconciler) planName(ctx context.Context, uid types.UID) (string, error) {
	plans := forklift.NewList(forklift.PlanGVK)
	if err := r.client.List(ctx, plans); err != nil {
		return "", fmt.Errorf("list forklift plans: %w", err)
	}
	for i := range plans.Items {
		if plans.Items[i].GetUID() == uid {
			return plans.Items[i].GetNamespace() + "/" + plans.Items[i].GetName(), nil
		}
	}
	return "", nil
}

// setupAutoCutover adds the automatic cutover controller, keyed by VMI.
func setupAutoCutover(mgr manager.Manager, c Config, m *metrics, api *kubeclient.Reachability, log logr.Logger) error {
	gvk := forklift.MigrationGVK
	if _, err := mgr.GetRESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
		return fmt.Errorf("forklift: %s is not served (install Forklift, or turn Forklift off): %w", gvk, err)
	}
	ar := &autoCutoverReconciler{client: mgr.GetClient(), namespace: c.Namespace, recorder: mgr.GetEventRecorder("netbridge-controller"),
		metrics: m, log: log.WithName("autocutover"), now: c.Now}
	cch := mgr.GetCache()
	self := func(_ context.Context, o client.Object) []reconcile.Request {
		if o.GetLabels()[forklift.LabelPlan] == "" {
			return nil
		}
		return []reconcile.Request{{NamespacedName: client.ObjectKeyFromObject(o)}}
	}
	// Every Forklift VMI: gateway reports, configs and migrations are few
	// and each may concern any of them; a reconcile of an uninvolved VMI
	// reads the cache and writes nothing.
	forkliftVMIs := func(ctx context.Context, _ client.Object) []reconcile.Request {
		vmis := kubevirt.NewList()
		if err := cch.List(ctx, vmis, client.HasLabels{forklift.LabelPlan}); err != nil {
			return nil
		}
		out := make([]reconcile.Request, 0, len(vmis.Items))
		for i := range vmis.Items {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&vmis.Items[i])})
		}
		return out
	}
	endpoint := func(_ context.Context, o client.Object) []reconcile.Request {
		ep, ok := o.(*nbv1.BridgeEndpoint)
		if !ok || ep.Spec.VMI == "" {
			return nil
		}
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: ep.Namespace, Name: ep.Spec.VMI}}}
	}
	watches := []source.TypedSource[reconcile.Request]{
		source.TypedKind[client.Object](cch, kubevirt.NewObject(), mapHandler(self, 0)),
		source.TypedKind[client.Object](cch, &nbv1.BridgeEndpoint{}, mapHandler(endpoint, 0)),
		source.TypedKind[client.Object](cch, &nbv1.BridgeGateway{}, mapHandler(forkliftVMIs, 0)),
		source.TypedKind[client.Object](cch, &nbv1.BridgeConfig{}, mapHandler(forkliftVMIs, 0), predicate.GenerationChangedPredicate{}),
		source.TypedKind[client.Object](cch, forklift.NewObject(forklift.MigrationGVK), mapHandler(forkliftVMIs, 0)),
	}
	if api != nil {
		watches = append(watches, onAPIReturn(api, log, "autocutover", func(ctx context.Context) []reconcile.Request { return forkliftVMIs(ctx, nil) }))
	}
	return addRequestController(mgr, c, "netbridge-autocutover", ar, watches)
}

// addRequestController adds a controller keyed by object name, with the
// retry bounds of c and two workers, and starts its watches.
func addRequestController(mgr manager.Manager, c Config, name string, r reconcile.Reconciler, watches []source.TypedSource[reconcile.Request]) error {
	ctl, err := ctrlcontroller.New(name, mgr, ctrlcontroller.Options{
		Reconciler:              r,
		MaxConcurrentReconciles: 2,
		RateLimiter:             retryLimiter[reconcile.Request](c),
		// Several managers run in one test process.
		SkipNameValidation: ptr.To(true),
	})
	if err != nil {
		return fmt.Errorf("new controller %s: %w", name, err)
	}
	for _, w := range watches {
		if err := ctl.Watch(w); err != nil {
			return fmt.Errorf("controller %s watch: %w", name, err)
		}
	}
	return nil
}
