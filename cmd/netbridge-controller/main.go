// Command netbridge-controller derives BridgeEndpoints from KubeVirt VMIs
// and BridgeConfigs (see package controller).
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/go-logr/zapr"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/netbridge-io/netbridge/controller"
	"github.com/netbridge-io/netbridge/internal/cli"
)

func main() {
	cmd := newCommand()
	cmd.SetArgs(cli.LegacyArgs(cmd, os.Args[1:]))
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "netbridge-controller:", err)
		os.Exit(1)
	}
}

// Default listen addresses: loopback, and netbridge's own ports beside the
// gateway's 9650/9651, so that a controller run on a host (out of cluster,
// next to a gateway agent or to other operators on controller-runtime's
// 8080/8081) collides with none of them. The manifests set :8080/:8081
// inside the pod's own network namespace.
const (
	defaultMetricsAddr = "127.0.0.1:9652"
	defaultHealthAddr  = "127.0.0.1:9653"
)

const examples = `  # In the cluster (what the Deployment runs; two replicas, one leader):
  netbridge-controller --leader-elect --metrics-bind-address=:8080 --health-probe-bind-address=:8081

  # Out of the cluster, from a workstation or a CI job:
  netbridge-controller --kubeconfig=$HOME/.kube/config --leader-elect=false`

func newCommand() *cobra.Command {
	var (
		c          controller.Config
		kubeconfig string
		logLevel   string
		qps        float32
		burst      int
	)
	cmd := &cobra.Command{
		Use:     "netbridge-controller",
		Short:   "Derive BridgeEndpoints from KubeVirt VMIs and BridgeConfigs",
		Example: examples,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			defer func() { _ = log.Sync() }()
			logger := zapr.NewLogger(log)
			ctrl.SetLogger(logger)
			klog.SetLogger(logger)
			c.Logger = logger
			c.Registerer = ctrlmetrics.Registry

			cfg, err := restConfig(kubeconfig)
			if err != nil {
				return err
			}
			// client-go's meaning: 0 takes its defaults (5 QPS, burst 10),
			// a negative QPS lifts the client-side limit (the default: the
			// API server's priority and fairness protects it, and a
			// migration wave writes one object per VM).
			cfg.QPS, cfg.Burst = qps, burst
			logger.Info("starting", "event", "start", "namespace", c.Namespace, "leaderElect", c.LeaderElect,
				"server", cfg.Host, "pid", os.Getpid())
			return controller.Run(ctrl.SetupSignalHandler(), cfg, c)
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster, then $KUBECONFIG / ~/.kube/config)")
	f.StringVar(&c.Namespace, "namespace", controller.DefaultNamespace, "namespace of the netbridge components (leases)")
	f.BoolVar(&c.LeaderElect, "leader-elect", false, "elect a leader with a Lease so that only one replica writes")
	f.StringVar(&c.LeaderElectionID, "leader-election-id", "netbridge-controller", "name of the leader election Lease")
	f.DurationVar(&c.LeaseDuration, "lease-duration", 15*time.Second, "leader lease duration")
	f.DurationVar(&c.RenewDeadline, "renew-deadline", 10*time.Second, "leader renew deadline")
	f.DurationVar(&c.RetryPeriod, "retry-period", 2*time.Second, "leader election retry period")
	f.StringVar(&c.MetricsBindAddress, "metrics-bind-address", defaultMetricsAddr, "Prometheus metrics address; loopback by default, e.g. :8080 in a pod (0 disables)")
	f.StringVar(&c.HealthProbeBindAddress, "health-probe-bind-address", defaultHealthAddr, "/healthz and /readyz address; loopback by default, e.g. :8081 in a pod for kubelet probes (0 disables)")
	f.DurationVar(&c.SyncPeriod, "sync-period", 10*time.Hour, "informer resync period")
	f.IntVar(&c.SegmentWorkers, "segment-workers", 8, "segments reconciled in parallel")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.Float32Var(&qps, "kube-api-qps", -1, "client-side API rate limit in requests per second (negative: none; 0: client-go's default, 5)")
	f.IntVar(&burst, "kube-api-burst", 0, "client-side API burst (0: client-go's default, 10)")
	f.DurationVar(&c.EchoDelay, "echo-delay", 200*time.Millisecond, "coalesce the echoes of the controller's own endpoint writes for this long")
	f.DurationVar(&c.StatusDelay, "status-delay", 500*time.Millisecond, "refresh a BridgeConfig's status at most this often under endpoint churn")
	f.DurationVar(&c.CacheWait, "cache-wait", 2*time.Second, "how long a reconcile waits for the cache to show its own writes")
	f.DurationVar(&c.RetryBaseDelay, "retry-base-delay", 5*time.Millisecond, "first back-off after a failed reconcile (doubles per failure)")
	f.DurationVar(&c.RetryMaxDelay, "retry-max-delay", 1000*time.Second, "longest back-off after failed reconciles (the API server's return re-queues everything anyway)")
	f.DurationVar(&c.APIProbeInterval, "api-probe-interval", time.Second, "how often the API server's /readyz is probed (readiness, apiReachable/apiUnreachable logs)")
	f.DurationVar(&c.APIProbeTimeout, "api-probe-timeout", 2*time.Second, "timeout of one /readyz probe (a hung API server fails it)")
	f.BoolVar(&c.NetworkAttachments, "network-attachments", false, "create a Multus NetworkAttachmentDefinition per segment in every namespace it allows (needs Multus's CRD)")
	f.BoolVar(&c.NodeReadiness, "node-readiness", false, "label nodes netbridge.io/segment.<bridgeconfig>.<segment>=ready from their agents' reports, and report endpoints on nodes without it")
	f.BoolVar(&c.Forklift, "forklift", false, "VMIs created by a Forklift (MTV) Plan join the segment whose NAD the Plan's NetworkMap maps their network to, and segments with cutoverPolicy AfterMigration cut them over when their Migration completes (needs --network-attachments and Forklift's CRDs)")
	cli.Setup(cmd)
	return cmd
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		if cfg, err := rest.InClusterConfig(); err == nil {
			return cfg, nil
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %q: %w", kubeconfig, err)
	}
	return cfg, nil
}

func newLogger(level string) (*zap.Logger, error) {
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.EncoderConfig.TimeKey = "ts"
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	// Errors here are conditions (an unreachable API server, a refused
	// write) with their cause in "error": a Go stack adds nothing.
	zc.DisableStacktrace = true
	return zc.Build()
}
