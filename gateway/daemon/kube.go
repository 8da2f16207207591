package daemon

import (
	"context"
	"fmt"

	"github.com/go-logr/zapr"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/flowcontrol"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/netbridge-io/netbridge/gateway"
	"github.com/netbridge-io/netbridge/gateway/kube"
	"github.com/netbridge-io/netbridge/gateway/peerlink"
	"github.com/netbridge-io/netbridge/internal/kubeclient"
	"github.com/netbridge-io/netbridge/internal/scheme"
	"github.com/netbridge-io/netbridge/vlan"
)

// startKube builds the Kubernetes parts — informer caches, the status
// writer with its events, and (gateway role) the per-segment election and
// the kernel fence — and fills them into deps. Everything that calls back
// into the agent holds deps.Trigger, which exists already: no callback is
// wired through a variable assigned later.
func startKube(ctx context.Context, o Options, deps *gateway.Deps, reg *prometheus.Registry, log *zap.Logger) (cleanup func(), err error) {
	// client-go and controller-runtime log through logr: the same zap core.
	ctrllog.SetLogger(zapr.NewLogger(log.Named("k8s")))
	cfg, err := restConfig(o.Kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = o.KubeQPS, o.KubeBurst
	sch := scheme.New()
	api, err := kubeclient.NewReachability(cfg, kubeclient.ReachabilityOptions{Logger: zapr.NewLogger(log.Named("api"))})
	if err != nil {
		return nil, fmt.Errorf("api reachability: %w", err)
	}
	go api.Run(ctx)
	src, err := kube.NewSource(cfg, sch, o.Namespace, o.NodeName, api)
	if err != nil {
		return nil, err
	}
	var election *kube.Election
	if o.Role == gateway.RoleGateway {
		// Lease renewals get their own client with no client-side
		// throttling: queued behind status writes and events they would
		// miss the renew deadline and fence a healthy gateway.
		lcfg := rest.CopyConfig(cfg)
		lcfg.RateLimiter = flowcontrol.NewFakeAlwaysRateLimiter()
		lcs, err := kubernetes.NewForConfig(lcfg)
		if err != nil {
			return nil, fmt.Errorf("lease clientset: %w", err)
		}
		election = kube.NewElection(lcs.CoordinationV1(), o.Namespace, o.NodeName, o.Lease, log.Named("election"), deps.Trigger.Fire)
		deps.Election = election
		// Kernel dead-man switch: if this process dies while it bridges a
		// VLAN that has a standby, the kernel stops bridging it when the
		// lease would have run out, before the standby attaches.
		if fence, err := vlan.NewFence(o.Lease.RenewDeadline); err != nil {
			log.Error("kernel fence unavailable: a crashed gateway would keep bridging its VLANs",
				zap.String("event", "fenceUnavailable"), zap.Error(err))
		} else {
			deps.Fence = fence
		}
	}
	onLease := func(name string) {
		if election != nil {
			election.PokeLease(name)
		}
	}
	log.Info("waiting for the API server's caches", zap.String("event", "cacheSyncWait"))
	if err := src.Start(ctx, deps.Trigger.Fire, onLease, log); err != nil {
		return nil, err
	}
	deps.Source = src
	if election != nil {
		if o.Peer.KeyFile == "" {
			log.Warn("no --peer-key-file: the peer channel is off and the Lease alone decides; an API server outage detaches the VLANs of segments with a standby",
				zap.String("event", "peerlinkOff"))
		} else {
			link, err := startPeerLink(ctx, o, src, log)
			if err != nil {
				return nil, err
			}
			election.SetFastRenewPeriod(haOptions(o.Peer).LeaseAloneGrace / 3)
			link.OnChange(deps.Trigger.Fire)
			reg.MustRegister(peerlink.Collector(link))
			deps.Peers = link
		}
		// Peers not heard within 10 heartbeats of our start count as dead.
		election.SetSpread(spreadAlive(deps.Peers, 10*o.Peer.Heartbeat), kube.DefaultSpreadDelay)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("clientset: %w", err)
	}
	c, err := client.New(cfg, client.Options{Scheme: sch})
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	bc := record.NewBroadcaster()
	bc.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	rec := bc.NewRecorder(sch, corev1.EventSource{Component: "netbridge-gateway", Host: o.NodeName})
	deps.Sink = kube.NewStatusWriter(c, rec, o.NodeName, o.Role, log.Named("status"))
	return bc.Shutdown, nil
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("in-cluster config (or set --kubeconfig / --config): %w", err)
	}
	return cfg, nil
}
