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
	"net"
	"net/http"
	"os"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/uuid"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlcontroller "sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller/forklift"
	"github.com/netbridge-io/netbridge/controller/kubevirt"
	"github.com/netbridge-io/netbridge/internal/kubeclient"
)

// DefaultNamespace of the netbridge system components.
const DefaultNamespace = "netbridge-system"

// Config configures NewManager and Run. Zero values take the defaults noted.
type Config struct {
	// Namespace holds the segment Leases and the controller's own lease
	// (default netbridge-system).
	Namespace string
	// LeaderElect enables leader election on a Lease named LeaderElectionID.
	LeaderElect      bool
	LeaderElectionID string // default netbridge-controller
	// LeaderIdentity is this process's name in the Lease (default
	// hostname_uuid). Run keeps it across the managers it builds, so that
	// a manager that lost leadership in an outage is followed by one that
	// renews its own lease at once instead of waiting for it to expire.
	LeaderIdentity string
	LeaseDuration  time.Duration
	RenewDeadline  time.Duration
	RetryPeriod    time.Duration
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
	// EchoDelay coalesces the echoes of our own endpoint writes into one
	// segment reconcile (default 200ms).
	EchoDelay time.Duration
	// StatusDelay coalesces endpoint churn into one BridgeConfig status
	// refresh (default 500ms).
	StatusDelay time.Duration
	// CacheWait bounds how long a segment reconcile waits for the cache to
	// show its own writes (default 2s).
	CacheWait time.Duration
	// RetryBaseDelay and RetryMaxDelay bound the per-key back-off after a
	// failed reconcile (defaults 5ms and 1000s, controller-runtime's); the
	// API server's return re-queues everything whatever the back-off.
	RetryBaseDelay time.Duration
	RetryMaxDelay  time.Duration
	// APIProbeInterval and APIProbeTimeout tune Run's API reachability
	// probe (defaults 1s and 2s, see kubeclient.ReachabilityOptions).
	APIProbeInterval time.Duration
	APIProbeTimeout  time.Duration
	// Registerer receives the netbridge metrics; nil: a private registry
	// (tests running several managers in one process).
	Registerer prometheus.Registerer
	Logger     logr.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
	// NetworkAttachments makes the controller create a Multus
	// NetworkAttachmentDefinition per segment in every namespace the
	// segment allows. Multus's CRD must be installed.
	NetworkAttachments bool
	// NodeReadiness labels every node with nbv1.SegmentReadyLabel for each
	// segment its agent reports programmed (for VMs' node affinity), and
	// reports endpoints on nodes without it (NodeNotReady).
	NodeReadiness bool
	// Forklift makes VMIs created by a Forklift (MTV) Plan join the
	// segment whose NAD the Plan's NetworkMap maps their network to,
	// without the segment label, and runs cutoverPolicy AfterMigration
	// from Forklift Migrations. Needs NetworkAttachments and Forklift's
	// CRDs; Plans, NetworkMaps and Migrations are only read.
	Forklift bool
}

func (c *Config) defaults() {
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
	}
	if c.LeaderElectionID == "" {
		c.LeaderElectionID = "netbridge-controller"
	}
	if c.LeaderIdentity == "" {
		host, _ := os.Hostname()
		c.LeaderIdentity = host + "_" + string(uuid.NewUUID())
	}
	if c.SegmentWorkers <= 0 {
		c.SegmentWorkers = 8
	}
	if c.WriteParallelism <= 0 {
		c.WriteParallelism = 4
	}
	setDefault(&c.EchoDelay, 200*time.Millisecond)
	setDefault(&c.StatusDelay, 500*time.Millisecond)
	setDefault(&c.CacheWait, 2*time.Second)
	setDefault(&c.RetryBaseDelay, 5*time.Millisecond)
	setDefault(&c.RetryMaxDelay, 1000*time.Second)
	setDefault(&c.RenewDeadline, 10*time.Second)
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

func setDefault(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
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
// BridgeConfig reconcilers. Start it with mgr.Start(ctx). A manager ends
// for good when it loses leadership; Run builds fresh ones instead.
func NewManager(cfg *rest.Config, c Config) (manager.Manager, error) {
	c.defaults()
	m, err := newMetrics(c.Registerer)
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	mgr, err := newManager(cfg, c, m, nil)
	if err != nil {
		return nil, err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, fmt.Errorf("add healthz: %w", err)
	}
	if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
		return nil, fmt.Errorf("add readyz: %w", err)
	}
	return mgr, nil
}

// newManager builds one manager; api, when set, gates the informers on the
// server's reachability, fails the manager's other requests at once while
// the server is unreachable, and re-queues everything when it comes back.
func newManager(cfg *rest.Config, c Config, m *metrics, api *kubeclient.Reachability) (manager.Manager, error) {
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
	if api != nil {
		opts.Cache.NewInformer = api.NewInformer
	}
	if c.LeaseDuration > 0 {
		opts.LeaseDuration = ptr.To(c.LeaseDuration)
	}
	opts.RenewDeadline = ptr.To(c.RenewDeadline)
	if c.RetryPeriod > 0 {
		opts.RetryPeriod = ptr.To(c.RetryPeriod)
	}
	if c.LeaderElect {
		lock, err := leaderLock(cfg, c)
		if err != nil {
			return nil, err
		}
		opts.LeaderElectionResourceLockInterface = lock
	}
	mcfg := cfg
	if api != nil {
		mcfg = rest.CopyConfig(cfg)
		mcfg.Wrap(api.WrapTransport)
	}
	mgr, err := manager.New(mcfg, opts)
	if err != nil {
		return nil, fmt.Errorf("new manager: %w", err)
	}
	if err := setup(mgr, c, m, api); err != nil {
		return nil, err
	}
	return mgr, nil
}

// leaderLock is controller-runtime's Lease lock with our identity, so that
// it can stay the same across managers.
func leaderLock(cfg *rest.Config, c Config) (resourcelock.Interface, error) {
	lc := rest.AddUserAgent(rest.CopyConfig(cfg), "leader-election")
	// As controller-runtime: one hung request must not cost the lease.
	lc.Timeout = max(c.RenewDeadline/2, time.Second)
	coord, err := coordinationv1client.NewForConfig(lc)
	if err != nil {
		return nil, fmt.Errorf("leader election client: %w", err)
	}
	core, err := corev1client.NewForConfig(lc)
	if err != nil {
		return nil, fmt.Errorf("leader election client: %w", err)
	}
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, c.Namespace, c.LeaderElectionID, core, coord,
		resourcelock.ResourceLockConfig{Identity: c.LeaderIdentity})
	if err != nil {
		return nil, fmt.Errorf("leader election lock %s/%s: %w", c.Namespace, c.LeaderElectionID, err)
	}
	return lock, nil
}

// Setup adds the indexes and both controllers to mgr.
func Setup(mgr manager.Manager, c Config) error {
	c.defaults()
	m, err := newMetrics(c.Registerer)
	if err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	return setup(mgr, c, m, nil)
}

func setup(mgr manager.Manager, c Config, m *metrics, api *kubeclient.Reachability) error {
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
	log := c.Logger
	if log.GetSink() == nil {
		log = mgr.GetLogger()
	}
	if c.Forklift {
		if !c.NetworkAttachments {
			return fmt.Errorf("forklift: needs NetworkAttachments (a NetworkMap maps networks to netbridge's NADs)")
		}
		for _, gvk := range []schema.GroupVersionKind{forklift.PlanGVK, forklift.NetworkMapGVK} {
			if _, err := mgr.GetRESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
				return fmt.Errorf("forklift: %s is not served (install Forklift, or turn Forklift off): %w", gvk, err)
			}
		}
		if err := idx.IndexField(ctx, kubevirt.NewObject(), indexVMIPlan, vmiPlan); err != nil {
			return fmt.Errorf("index vmis by forklift plan: %w", err)
		}
	}

	seg := &segmentReconciler{
		client:           mgr.GetClient(),
		namespace:        c.Namespace,
		recorder:         mgr.GetEventRecorder("netbridge-controller"),
		metrics:          m,
		log:              log.WithName("segment"),
		writeParallelism: c.WriteParallelism,
		cacheWait:        c.CacheWait,
		now:              c.Now,
		nodeReadiness:    c.NodeReadiness,
		forklift:         c.Forklift,
		expect:           newCreateExpectations(),
	}
	sc, err := ctrlcontroller.NewTyped("netbridge-segment", mgr, ctrlcontroller.TypedOptions[SegmentKey]{
		Reconciler:              seg,
		MaxConcurrentReconciles: c.SegmentWorkers,
		RateLimiter:             retryLimiter[SegmentKey](c),
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
	m2s := &segmentMapper{cache: cch, namespace: c.Namespace, forklift: c.Forklift}
	watches := []source.TypedSource[SegmentKey]{
		source.TypedKind[client.Object](cch, kubevirt.NewObject(), mapHandler(m2s.vmi, 0)),
		// Endpoint events are mostly the echo of our own writes: coalesce.
		source.TypedKind[client.Object](cch, &nbv1.BridgeEndpoint{}, mapHandler(m2s.endpoint, c.EchoDelay)),
		// Status writes do not change what segments plan from.
		source.TypedKind[client.Object](cch, &nbv1.BridgeConfig{}, mapHandler(m2s.config, 0), predicate.GenerationChangedPredicate{}),
		source.TypedKind[client.Object](cch, &corev1.Node{}, mapHandler(m2s.node, 0), nodeChanged()),
		source.TypedKind[client.Object](cch, &corev1.Namespace{}, mapHandler(m2s.ns, 0), labelsChanged()),
		source.TypedKind[client.Object](cch, &coordinationv1.Lease{}, mapHandler(m2s.lease, 0)),
		source.TypedKind[client.Object](cch, &nbv1.BridgeGateway{}, mapHandler(m2s.gateway, 0)),
	}
	if c.Forklift {
		everySegment := func(ctx context.Context, _ client.Object) []SegmentKey { return m2s.all(ctx, nil) }
		watches = append(watches,
			source.TypedKind[client.Object](cch, newNAD(), mapHandler(m2s.nad, 0)),
			source.TypedKind[client.Object](cch, forklift.NewObject(forklift.PlanGVK), mapHandler(everySegment, 0)),
			source.TypedKind[client.Object](cch, forklift.NewObject(forklift.NetworkMapGVK), mapHandler(everySegment, 0)))
	}
	if api != nil {
		watches = append(watches, onAPIReturn(api, log, "segment", func(ctx context.Context) []SegmentKey { return m2s.all(ctx, nil) }))
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
		RateLimiter:             retryLimiter[reconcile.Request](c),
		SkipNameValidation:      ptr.To(true),
	})
	if err != nil {
		return fmt.Errorf("new bridgeconfig controller: %w", err)
	}
	m2c := &configMapper{segments: m2s}
	// Endpoint churn (bulk creates) refreshes counts at most every
	// StatusDelay per BridgeConfig instead of once per endpoint.
	cwatches := []source.TypedSource[reconcile.Request]{
		source.TypedKind[client.Object](cch, &nbv1.BridgeConfig{}, mapHandler(m2c.config, 0), predicate.GenerationChangedPredicate{}),
		source.TypedKind[client.Object](cch, &nbv1.BridgeEndpoint{}, mapHandler(m2c.endpoint, c.StatusDelay)),
		source.TypedKind[client.Object](cch, &corev1.Node{}, mapHandler(m2c.allConfigs, 0), nodeLabelsChanged()),
		source.TypedKind[client.Object](cch, &coordinationv1.Lease{}, mapHandler(m2c.lease, 0)),
		source.TypedKind[client.Object](cch, &nbv1.BridgeGateway{}, mapHandler(m2c.gateway, 0)),
	}
	if api != nil {
		cwatches = append(cwatches, onAPIReturn(api, log, "bridgeconfig", func(ctx context.Context) []reconcile.Request { return m2c.allConfigs(ctx, nil) }))
	}
	for _, w := range cwatches {
		if err := cc.Watch(w); err != nil {
			return fmt.Errorf("bridgeconfig controller watch: %w", err)
		}
	}
	if c.NodeReadiness {
		if err := setupNodeReadiness(mgr, c, m, api, log); err != nil {
			return err
		}
	}
	if c.Forklift {
		if err := setupAutoCutover(mgr, c, m, api, log); err != nil {
			return err
		}
	}
	if c.NetworkAttachments {
		return setupNetworkAttachments(mgr, c, m, api, log, m2c)
	}
	return nil
}

// setupNodeReadiness adds the node readiness controller, keyed by node.
func setupNodeReadiness(mgr manager.Manager, c Config, m *metrics, api *kubeclient.Reachability, log logr.Logger) error {
	nr := &nodeReadyReconciler{client: mgr.GetClient(), metrics: m, log: log.WithName("nodereadiness")}
	nc, err := ctrlcontroller.New("netbridge-nodereadiness", mgr, ctrlcontroller.Options{
		Reconciler:              nr,
		MaxConcurrentReconciles: 2,
		RateLimiter:             retryLimiter[reconcile.Request](c),
		SkipNameValidation:      ptr.To(true),
	})
	if err != nil {
		return fmt.Errorf("new node readiness controller: %w", err)
	}
	cch := mgr.GetCache()
	self := func(_ context.Context, o client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: o.GetName()}}}
	}
	allNodes := func(ctx context.Context, _ client.Object) []reconcile.Request {
		var nodes corev1.NodeList
		if err := cch.List(ctx, &nodes, unsafeList); err != nil {
			return nil
		}
		out := make([]reconcile.Request, 0, len(nodes.Items))
		for i := range nodes.Items {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKey{Name: nodes.Items[i].Name}})
		}
		return out
	}
	watches := []source.TypedSource[reconcile.Request]{
		source.TypedKind[client.Object](cch, &corev1.Node{}, mapHandler(self, 0), nodeLabelsOrReadyChanged()),
		source.TypedKind[client.Object](cch, &nbv1.BridgeGateway{}, mapHandler(self, 0)),
		// A removed segment's labels go; a new one's come when reported.
		source.TypedKind[client.Object](cch, &nbv1.BridgeConfig{}, mapHandler(allNodes, 0), predicate.GenerationChangedPredicate{}),
	}
	if api != nil {
		watches = append(watches, onAPIReturn(api, log, "nodereadiness", func(ctx context.Context) []reconcile.Request { return allNodes(ctx, nil) }))
	}
	for _, w := range watches {
		if err := nc.Watch(w); err != nil {
			return fmt.Errorf("node readiness controller watch: %w", err)
		}
	}
	return nil
}

// setupNetworkAttachments adds the NAD controller, keyed by BridgeConfig.
func setupNetworkAttachments(mgr manager.Manager, c Config, m *metrics, api *kubeclient.Reachability, log logr.Logger, m2c *configMapper) error {
	if _, err := mgr.GetRESTMapper().RESTMapping(nadGVK.GroupKind(), nadGVK.Version); err != nil {
		return fmt.Errorf("network attachments: %s is not served (install Multus, or turn NetworkAttachments off): %w", nadGVK, err)
	}
	nr := &nadReconciler{client: mgr.GetClient(), recorder: mgr.GetEventRecorder("netbridge-controller"), metrics: m,
		log: log.WithName("networkattachment"), now: c.Now}
	nc, err := ctrlcontroller.New("netbridge-networkattachment", mgr, ctrlcontroller.Options{
		Reconciler:              nr,
		MaxConcurrentReconciles: 2,
		RateLimiter:             retryLimiter[reconcile.Request](c),
		SkipNameValidation:      ptr.To(true),
	})
	if err != nil {
		return fmt.Errorf("new network attachment controller: %w", err)
	}
	cch := mgr.GetCache()
	self := func(_ context.Context, o client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: o.GetName()}}}
	}
	// A labelled NAD belongs (or claims to belong) to one BridgeConfig; an
	// unlabelled one may take a name some segment wants.
	nad := func(ctx context.Context, o client.Object) []reconcile.Request {
		if bc := o.GetLabels()[nbv1.LabelBridgeConfig]; bc != "" {
			return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: bc}}}
		}
		return m2c.allConfigs(ctx, o)
	}
	watches := []source.TypedSource[reconcile.Request]{
		source.TypedKind[client.Object](cch, &nbv1.BridgeConfig{}, mapHandler(self, 0), predicate.GenerationChangedPredicate{}),
		source.TypedKind[client.Object](cch, &corev1.Namespace{}, mapHandler(m2c.allConfigs, 0), labelsChanged()),
		source.TypedKind[client.Object](cch, newNAD(), mapHandler(nad, 0)),
	}
	if api != nil {
		watches = append(watches, onAPIReturn(api, log, "networkattachment", func(ctx context.Context) []reconcile.Request { return m2c.allConfigs(ctx, nil) }))
	}
	for _, w := range watches {
		if err := nc.Watch(w); err != nil {
			return fmt.Errorf("network attachment controller watch: %w", err)
		}
	}
	return nil
}

// retryLimiter is controller-runtime's default limiter with the per-key
// back-off bounds of c.
func retryLimiter[R comparable](c Config) workqueue.TypedRateLimiter[R] {
	return workqueue.NewTypedMaxOfRateLimiter(
		workqueue.NewTypedItemExponentialFailureRateLimiter[R](c.RetryBaseDelay, c.RetryMaxDelay),
		&workqueue.TypedBucketRateLimiter[R]{Limiter: rate.NewLimiter(rate.Limit(10), 100)},
	)
}

// onAPIReturn queues every key when the API server answers again: writes
// that failed during the outage sit in a back-off that may be long by then,
// and requeues due during it (lease expiries) were lost. It queues them
// again when an informer resumes: the first reconciles read caches that
// may still lack writes made just before the outage.
func onAPIReturn[R comparable](api *kubeclient.Reachability, log logr.Logger, name string, all func(context.Context) []R) source.TypedSource[R] {
	return source.TypedFunc[R](func(ctx context.Context, q workqueue.TypedRateLimitingInterface[R]) error {
		requeue := func(after string) func() {
			return func() {
				keys := all(ctx)
				for _, k := range keys {
					q.Add(k)
				}
				log.Info("API server back: requeued everything", "event", "requeueAll", "controller", name, "keys", len(keys), "after", after)
			}
		}
		api.OnReturn(ctx, requeue("apiReturn"))
		api.OnResumed(ctx, requeue("informerResumed"))
		return nil
	})
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

// nodeLabelsOrReadyChanged: the labels, or whether the node is NotReady
// (the readiness labels' freshness rule), changed.
func nodeLabelsOrReadyChanged() updatePredicate {
	labels := nodeLabelsChanged()
	return func(o, n client.Object) bool {
		on, _ := o.(*corev1.Node)
		nn, _ := n.(*corev1.Node)
		return labels(o, n) || kubeletNotReady(on) != kubeletNotReady(nn)
	}
}

// Run runs the controller until ctx ends, through API server outages: it
// waits for the server at start-up instead of failing, and when a manager
// ends (leadership lost while the server was unreachable, caches that
// could not sync) it builds a fresh one in this process, with the same
// leader identity. Readiness (/readyz) is the server's reachability;
// liveness (/healthz) stays true. It returns an error only for what no
// retry can fix (a port that cannot be bound).
func Run(ctx context.Context, cfg *rest.Config, c Config) error {
	c.defaults()
	log := c.Logger
	m, err := newMetrics(c.Registerer)
	if err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	reachable, err := newAPIReachableGauge(c.Registerer)
	if err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	api, err := kubeclient.NewReachability(cfg, kubeclient.ReachabilityOptions{
		Interval: c.APIProbeInterval,
		Timeout:  c.APIProbeTimeout,
		Logger:   log.WithName("api"),
		OnChange: func(up bool) { reachable.Set(map[bool]float64{true: 1}[up]) },
	})
	if err != nil {
		return err
	}
	servers, err := listenHTTP(c, api)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		api.Run(ctx)
	}()
	defer func() {
		cancel()
		<-done
		servers.shutdown()
	}()

	// The manager's own servers would be bound and unbound with each
	// manager; ours live as long as the process.
	c.MetricsBindAddress, c.HealthProbeBindAddress = "0", ""
	const firstPause, maxPause = 250 * time.Millisecond, 4 * time.Second
	pause := firstPause
	for {
		if api.WaitReachable(ctx) != nil {
			return nil
		}
		started := time.Now()
		err := runManager(ctx, cfg, c, m, api)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(started) > time.Minute {
			pause = firstPause
		}
		log.Info("manager ended: starting a fresh one", "event", "managerRestart", "error", fmt.Sprint(err),
			"ranFor", time.Since(started).Round(time.Millisecond).String(), "pause", pause.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(pause):
		}
		pause = min(2*pause, maxPause)
	}
}

func runManager(ctx context.Context, cfg *rest.Config, c Config, m *metrics, api *kubeclient.Reachability) error {
	mgr, err := newManager(cfg, c, m, api)
	if err != nil {
		return err
	}
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-mctx.Done():
		case <-mgr.Elected():
			if c.LeaderElect {
				c.Logger.Info("leading", "event", "leaderElected", "lease", c.Namespace+"/"+c.LeaderElectionID, "identity", c.LeaderIdentity)
			}
		}
	}()
	c.Logger.Info("manager starting", "event", "managerStart", "leaderElect", c.LeaderElect, "identity", c.LeaderIdentity)
	return mgr.Start(mctx)
}

// httpServers are the process's metrics and health servers.
type httpServers struct{ servers []*http.Server }

func listenHTTP(c Config, api *kubeclient.Reachability) (*httpServers, error) {
	s := &httpServers{}
	serve := func(addr string, h http.Handler) error {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			s.shutdown()
			return fmt.Errorf("listen %s: %w", addr, err)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		s.servers = append(s.servers, srv)
		go func() { _ = srv.Serve(ln) }()
		return nil
	}
	if c.MetricsBindAddress != "" && c.MetricsBindAddress != "0" {
		g, ok := c.Registerer.(prometheus.Gatherer)
		if !ok {
			g = ctrlmetrics.Registry
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
		if err := serve(c.MetricsBindAddress, mux); err != nil {
			return nil, err
		}
	}
	if c.HealthProbeBindAddress != "" {
		mux := http.NewServeMux()
		// Liveness: the process and its loop run; readiness: and the API
		// server answers. The reason is in the body (kubectl describe).
		mux.Handle("/healthz", probeHandler(func() error { return nil }))
		mux.Handle("/readyz", probeHandler(func() error { return api.Check(nil) }))
		if err := serve(c.HealthProbeBindAddress, mux); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func probeHandler(check func() error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if err := check(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
}

func (s *httpServers) shutdown() {
	for _, srv := range s.servers {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = srv.Shutdown(ctx)
		cancel()
	}
}
