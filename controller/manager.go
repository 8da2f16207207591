// Package controller derives BridgeEndpoints from KubeVirt
// VirtualMachineInstances and BridgeConfigs, decides IP conflicts, mirrors
// the gateways' reports onto endpoints, and writes BridgeConfig status.
//
// Work is keyed by segment: every event (VMI, endpoint, node, namespace,
// lease, gateway, config) maps to the segments it can affect, and one
// reconcile plans a whole segment with the pure PlanSegment.
package controller

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlcontroller "sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller/kubevirt"
)

// DefaultNamespace of the netbridge system components.
const DefaultNamespace = "netbridge-system"

// Config configures NewManager. Zero values take the defaults noted.
type Config struct {
	// Namespace holds the segment Leases and the controller's own lease
	// (default netbridge-system).
	Namespace string
	// LeaderElect enables leader election on a Lease named LeaderElectionID.
	LeaderElect      bool
	LeaderElectionID string // default netbridge-controller
	LeaseDuration    time.Duration
	RenewDeadline    time.Duration
	RetryPeriod      time.Duration
	// MetricsBindAddress, e.g. ":8080"; "" or "0" disables the server.
	MetricsBindAddress string
	// HealthProbeBindAddress, e.g. ":8081"; "" or "0" disables it.
	HealthProbeBindAddress string
	// SyncPeriod is the informer resync (default 10h, controller-runtime's).
	SyncPeriod time.Duration
	// SegmentWorkers reconcile segments in parallel (default 8).
	SegmentWorkers int
	// WriteParallelism bounds concurrent writes within a segment (default 4).
	WriteParallelism int
	// Registerer receives the netbridge metrics; nil: a private registry
	// (tests running several managers in one process).
	Registerer prometheus.Registerer
	Logger     logr.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

func (c *Config) defaults() {
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
	}
	if c.LeaderElectionID == "" {
		c.LeaderElectionID = "netbridge-controller"
	}
	if c.SegmentWorkers <= 0 {
		c.SegmentWorkers = 8
	}
	if c.WriteParallelism <= 0 {
		c.WriteParallelism = 4
	}
	if c.Registerer == nil {
		c.Registerer = prometheus.NewRegistry()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.MetricsBindAddress == "" {
		c.MetricsBindAddress = "0"
	}
	if c.HealthProbeBindAddress == "0" {
		c.HealthProbeBindAddress = ""
	}
}

// NewScheme has client-go's types and netbridge's; VMIs stay unstructured.
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("add client-go types: %w", err)
	}
	if err := nbv1.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("add netbridge types: %w", err)
	}
	return s, nil
}

// NewManager builds a controller-runtime manager running the segment and
// BridgeConfig reconcilers. Start it with mgr.Start(ctx).
func NewManager(cfg *rest.Config, c Config) (manager.Manager, error) {
	c.defaults()
	scheme, err := NewScheme()
	if err != nil {
		return nil, err
	}
	var syncPeriod *time.Duration
	if c.SyncPeriod > 0 {
		syncPeriod = ptr.To(c.SyncPeriod)
	}
	opts := manager.Options{
		Scheme: scheme,
		Logger: c.Logger,
		Cache: cache.Options{
			SyncPeriod: syncPeriod,
			// 10,000 VMIs' managed fields are most of their bytes.
			DefaultTransform: cache.TransformStripManagedFields(),
			ByObject: map[client.Object]cache.ByObject{
				&coordinationv1.Lease{}: {Namespaces: map[string]cache.Config{c.Namespace: {}}},
			},
		},
		// VMIs are unstructured: read them from the cache too (the default
		// sends unstructured reads to the API server, without our indexes).
		Client:                        client.Options{Cache: &client.CacheOptions{Unstructured: true}},
		Metrics:                       metricsserver.Options{BindAddress: c.MetricsBindAddress},
		HealthProbeBindAddress:        c.HealthProbeBindAddress,
		LeaderElection:                c.LeaderElect,
		LeaderElectionID:              c.LeaderElectionID,
		LeaderElectionNamespace:       c.Namespace,
		LeaderElectionReleaseOnCancel: true,
	}
	if c.LeaseDuration > 0 {
		opts.LeaseDuration = ptr.To(c.LeaseDuration)
	}
	if c.RenewDeadline > 0 {
		opts.RenewDeadline = ptr.To(c.RenewDeadline)
	}
	if c.RetryPeriod > 0 {
		opts.RetryPeriod = ptr.To(c.RetryPeriod)
	}
	mgr, err := manager.New(cfg, opts)
	if err != nil {
		return nil, fmt.Errorf("new manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, fmt.Errorf("add healthz: %w", err)
	}
	if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
		return nil, fmt.Errorf("add readyz: %w", err)
	}
	if err := Setup(mgr, c); err != nil {
		return nil, err
	}
	return mgr, nil
}

// Setup adds the indexes and both controllers to mgr.
func Setup(mgr manager.Manager, c Config) error {
	c.defaults()
	ctx := context.Background()
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, kubevirt.NewObject(), indexVMISegment, vmiSegment); err != nil {
		return fmt.Errorf("index vmis by segment: %w", err)
	}
	if err := idx.IndexField(ctx, kubevirt.NewObject(), indexVMINode, vmiNode); err != nil {
		return fmt.Errorf("index vmis by node: %w", err)
	}
	if err := idx.IndexField(ctx, &nbv1.BridgeEndpoint{}, indexEndpointSegment, endpointSegment); err != nil {
		return fmt.Errorf("index endpoints by segment: %w", err)
	}
	m, err := newMetrics(c.Registerer)
	if err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	log := c.Logger
	if log.GetSink() == nil {
		log = mgr.GetLogger()
	}

	seg := &segmentReconciler{
		client:           mgr.GetClient(),
		namespace:        c.Namespace,
		recorder:         mgr.GetEventRecorder("netbridge-controller"),
		metrics:          m,
		log:              log.WithName("segment"),
		writeParallelism: c.WriteParallelism,
		cacheWait:        2 * time.Second,
		now:              c.Now,
	}
	sc, err := ctrlcontroller.NewTyped("netbridge-segment", mgr, ctrlcontroller.TypedOptions[SegmentKey]{
		Reconciler:              seg,
		MaxConcurrentReconciles: c.SegmentWorkers,
		// Several managers run in one test process.
		SkipNameValidation: ptr.To(true),
		LogConstructor: func(k *SegmentKey) logr.Logger {
			l := log.WithName("segment")
			if k != nil {
				l = l.WithValues("bridgeconfig", k.BridgeConfig, "segment", k.Segment)
			}
			return l
		},
	})
	if err != nil {
		return fmt.Errorf("new segment controller: %w", err)
	}
	cch := mgr.GetCache()
	const echoDelay = 200 * time.Millisecond
	m2s := &segmentMapper{cache: cch, namespace: c.Namespace}
	watches := []source.TypedSource[SegmentKey]{
		source.TypedKind[client.Object](cch, kubevirt.NewObject(), mapHandler(m2s.vmi, 0)),
		// Endpoint events are mostly the echo of our own writes: coalesce.
		source.TypedKind[client.Object](cch, &nbv1.BridgeEndpoint{}, mapHandler(m2s.endpoint, echoDelay)),
		// Status writes do not change what segments plan from.
		source.TypedKind[client.Object](cch, &nbv1.BridgeConfig{}, mapHandler(m2s.config, 0), predicate.GenerationChangedPredicate{}),
		source.TypedKind[client.Object](cch, &corev1.Node{}, mapHandler(m2s.node, 0), nodeChanged()),
		source.TypedKind[client.Object](cch, &corev1.Namespace{}, mapHandler(m2s.ns, 0), labelsChanged()),
		source.TypedKind[client.Object](cch, &coordinationv1.Lease{}, mapHandler(m2s.lease, 0)),
		source.TypedKind[client.Object](cch, &nbv1.BridgeGateway{}, mapHandler(m2s.gateway, 0)),
	}
	for _, w := range watches {
		if err := sc.Watch(w); err != nil {
			return fmt.Errorf("segment controller watch: %w", err)
		}
	}

	cfgr := &configReconciler{client: mgr.GetClient(), namespace: c.Namespace, metrics: m, log: log.WithName("bridgeconfig"), now: c.Now}
	cc, err := ctrlcontroller.New("netbridge-bridgeconfig", mgr, ctrlcontroller.Options{
		Reconciler:              cfgr,
		MaxConcurrentReconciles: 2,
		SkipNameValidation:      ptr.To(true),
	})
	if err != nil {
		return fmt.Errorf("new bridgeconfig controller: %w", err)
	}
	m2c := &configMapper{segments: m2s}
	// Endpoint churn (bulk creates) refreshes counts at most every
	// configDelay per BridgeConfig instead of once per endpoint.
	const configDelay = 500 * time.Millisecond
	cwatches := []source.TypedSource[reconcile.Request]{
		source.TypedKind[client.Object](cch, &nbv1.BridgeConfig{}, mapHandler(m2c.config, 0), predicate.GenerationChangedPredicate{}),
		source.TypedKind[client.Object](cch, &nbv1.BridgeEndpoint{}, mapHandler(m2c.endpoint, configDelay)),
		source.TypedKind[client.Object](cch, &corev1.Node{}, mapHandler(m2c.allConfigs, 0), nodeLabelsChanged()),
		source.TypedKind[client.Object](cch, &coordinationv1.Lease{}, mapHandler(m2c.lease, 0)),
		source.TypedKind[client.Object](cch, &nbv1.BridgeGateway{}, mapHandler(m2c.gateway, 0)),
	}
	for _, w := range cwatches {
		if err := cc.Watch(w); err != nil {
			return fmt.Errorf("bridgeconfig controller watch: %w", err)
		}
	}
	return nil
}

// mapHandler enqueues what fn maps an object to; updates map both the old
// and the new object, so that a VMI leaving a segment reconciles the old
// one. A delay > 0 coalesces bursts.
func mapHandler[T client.Object, R comparable](fn func(context.Context, T) []R, delay time.Duration) handler.TypedEventHandler[T, R] {
	add := func(ctx context.Context, q workqueue.TypedRateLimitingInterface[R], objs ...T) {
		for _, o := range objs {
			for _, r := range fn(ctx, o) {
				if delay > 0 {
					q.AddAfter(r, delay)
				} else {
					q.Add(r)
				}
			}
		}
	}
	return handler.TypedFuncs[T, R]{
		CreateFunc: func(ctx context.Context, e event.TypedCreateEvent[T], q workqueue.TypedRateLimitingInterface[R]) {
			add(ctx, q, e.Object)
		},
		UpdateFunc: func(ctx context.Context, e event.TypedUpdateEvent[T], q workqueue.TypedRateLimitingInterface[R]) {
			add(ctx, q, e.ObjectOld, e.ObjectNew)
		},
		DeleteFunc: func(ctx context.Context, e event.TypedDeleteEvent[T], q workqueue.TypedRateLimitingInterface[R]) {
			add(ctx, q, e.Object)
		},
		GenericFunc: func(ctx context.Context, e event.TypedGenericEvent[T], q workqueue.TypedRateLimitingInterface[R]) {
			add(ctx, q, e.Object)
		},
	}
}

type updatePredicate func(old, new client.Object) bool

func (p updatePredicate) Create(event.TypedCreateEvent[client.Object]) bool   { return true }
func (p updatePredicate) Delete(event.TypedDeleteEvent[client.Object]) bool   { return true }
func (p updatePredicate) Generic(event.TypedGenericEvent[client.Object]) bool { return true }
func (p updatePredicate) Update(e event.TypedUpdateEvent[client.Object]) bool {
	return p(e.ObjectOld, e.ObjectNew)
}

// nodeChanged passes node updates that change a VTEP or the labels that
// gateway selectors read; kubelet heartbeats change neither.
func nodeChanged() updatePredicate {
	return func(o, n client.Object) bool {
		a, okA := o.(*corev1.Node)
		b, okB := n.(*corev1.Node)
		if !okA || !okB {
			return true
		}
		return vtepOf(a) != vtepOf(b) || !equality.Semantic.DeepEqual(a.Labels, b.Labels)
	}
}

func nodeLabelsChanged() updatePredicate {
	return func(o, n client.Object) bool {
		return !equality.Semantic.DeepEqual(o.GetLabels(), n.GetLabels())
	}
}

func labelsChanged() updatePredicate { return nodeLabelsChanged() }
