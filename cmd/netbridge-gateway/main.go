// Command netbridge-gateway is the node agent: role gateway on edge nodes
// (VLAN ⇄ VXLAN bridging + BGP), role node on VM nodes (VXLAN + bridge).
package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/netbridge-io/netbridge/gateway"
	"github.com/netbridge-io/netbridge/gateway/daemon"
	"github.com/netbridge-io/netbridge/internal/cli"
)

func main() {
	cmd := newCommand(func(o daemon.Options, logLevel string) error {
		log, err := newLogger(logLevel)
		if err != nil {
			return err
		}
		defer func() { _ = log.Sync() }()
		sigs := make(chan os.Signal, 2)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
		if err := daemon.Run(context.Background(), o, sigs, log); err != nil {
			log.Error("netbridge-gateway", zap.Error(err))
			return err
		}
		return nil
	})
	cmd.SetArgs(cli.LegacyArgs(cmd, os.Args[1:]))
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "netbridge-gateway:", err)
		os.Exit(1)
	}
}

const examples = `  # Kubernetes mode, edge node (what the DaemonSet runs):
  netbridge-gateway --role=gateway --node-name=$NODE_NAME --peer-key-file=/etc/netbridge/peer/key

  # Kubernetes mode, VM node:
  netbridge-gateway --role=node --node-name=$NODE_NAME

  # Standalone mode, edge host without a cluster (docs/standalone.md):
  netbridge-gateway --config=/etc/netbridge/bridge.yaml --vtep=192.0.2.10

  # Status of a standalone agent (JSON, on the health address):
  curl -s http://127.0.0.1:9651/status`

// newCommand parses the flags into daemon.Options and hands them to run.
func newCommand(run func(o daemon.Options, logLevel string) error) *cobra.Command {
	var o daemon.Options
	var role, vtep, logLevel string
	var qps float64
	cmd := &cobra.Command{
		Use:     "netbridge-gateway",
		Short:   "netbridge node agent: VLAN ⇄ VXLAN bridging and BGP (gateway), VXLAN + bridge (node)",
		Example: examples,
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			o.Role = gateway.Role(role)
			o.KubeQPS = float32(qps)
			if vtep != "" {
				v, err := netip.ParseAddr(vtep)
				if err != nil {
					return fmt.Errorf("--vtep: %w", err)
				}
				o.VTEP = v
			}
			return run(o, logLevel)
		},
	}
	fs := cmd.Flags()
	fs.SortFlags = false
	fs.StringVar(&role, "role", "gateway", "gateway (edge node: VLAN ⇄ VXLAN + BGP) or node (VM node: VXLAN + bridge)")
	fs.StringVar(&o.NodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME; standalone: the host name)")
	fs.StringVar(&o.ConfigFile, "config", "", "standalone mode: read segments, peers and endpoints from this YAML file (no API server; docs/standalone.md)")
	fs.StringVar(&vtep, "vtep", "", "local VXLAN tunnel endpoint (default: node annotation netbridge.io/vtep, else InternalIP; required with --config)")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file (default: in-cluster)")
	fs.StringVar(&o.Namespace, "namespace", "netbridge-system", "namespace of the segment Leases and BGP password Secrets")
	fs.DurationVar(&o.Lease.LeaseDuration, "lease-duration", 15*time.Second, "segment lease duration")
	fs.DurationVar(&o.Lease.RenewDeadline, "renew-deadline", 10*time.Second, "a holder that could not renew for this long detaches its VLAN (self-fencing)")
	fs.DurationVar(&o.Lease.RetryPeriod, "retry-period", 2*time.Second, "interval between lease acquire/renew attempts")
	fs.Float64Var(&qps, "kube-api-qps", 20, "client-side limit of API requests per second for status, events and reads (lease renewals are not limited)")
	fs.IntVar(&o.KubeBurst, "kube-api-burst", 50, "burst above --kube-api-qps")
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", daemon.DefaultMetricsAddr, "Prometheus /metrics address; loopback by default, e.g. :9650 or NODE_IP:9650 to let Prometheus scrape it (empty: off)")
	fs.StringVar(&o.HealthAddr, "health-probe-bind-address", daemon.DefaultHealthAddr, "/healthz, /readyz and /status address; loopback by default, e.g. NODE_IP:9651 for kubelet probes (empty: off)")
	fs.DurationVar(&o.ShutdownWait, "graceful-shutdown-wait", 30*time.Second, "on SIGTERM, how long routes carry GRACEFUL_SHUTDOWN before they are withdrawn")
	fs.DurationVar(&o.Resync, "resync", 30*time.Second, "full reconcile interval (drift repair)")
	fs.DurationVar(&o.ReachabilityInterval, "reachability-interval", 10*time.Second, "ARP check of active VMs across the segment")
	fs.DurationVar(&o.DuplicateBackoffMin, "duplicate-backoff-min", time.Second, "first re-probe delay of an IP answered by another MAC")
	fs.DurationVar(&o.DuplicateBackoffMax, "duplicate-backoff-max", 30*time.Second, "longest re-probe delay")
	fs.DurationVar(&o.ProbeWait, "probe-wait", 500*time.Millisecond, "how long a duplicate-address probe listens for answers")
	fs.Float64Var(&o.Announce.Rate, "announce-rate", 1000, "gratuitous ARP / RARP frames per second at most (a failover of many VMs must not storm the VLAN)")
	fs.StringVar(&o.Peer.KeyFile, "peer-key-file", "", "file with the peer channel's shared key (16, 24 or 32 raw bytes, the same on every gateway); empty: no peer channel, the Lease alone decides")
	fs.IntVar(&o.Peer.Port, "peer-port", 7946, "UDP (and TCP) port of the peer channel on the VTEP address")
	fs.DurationVar(&o.Peer.Heartbeat, "peer-heartbeat", 100*time.Millisecond, "peer channel heartbeat interval; the kernel fence is refreshed this often")
	fs.DurationVar(&o.Peer.DeadAfter, "peer-dead-after", 0, "a peer silent this long is dead (default 3 heartbeats)")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	cli.Setup(cmd)
	return cmd
}

func newLogger(level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.EncoderConfig.TimeKey = "ts"
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	return cfg.Build()
}
