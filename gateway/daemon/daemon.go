// Package daemon runs the netbridge-gateway process: it builds the agent
// core (package gateway) with its real collaborators — the kernel data
// plane, the BGP speaker, and either the Kubernetes parts (gateway/kube)
// or the standalone file — and serves metrics and health.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/netbridge-io/netbridge/bgp"
	"github.com/netbridge-io/netbridge/gateway"
	"github.com/netbridge-io/netbridge/gateway/kube"
	"github.com/netbridge-io/netbridge/vlan"
)

// Default listen addresses: loopback, because the agent runs in the host's
// network namespace and its metrics and status are nobody else's business
// unless the operator widens them (the manifests do, for Prometheus and
// the kubelet).
const (
	DefaultMetricsAddr = "127.0.0.1:9650"
	DefaultHealthAddr  = "127.0.0.1:9651"
)

// Options is everything the command line sets.
type Options struct {
	Role       gateway.Role
	NodeName   string
	Kubeconfig string
	Namespace  string
	// ConfigFile selects standalone mode (no API server).
	ConfigFile string
	VTEP       netip.Addr
	Lease      kube.LeaseTimings
	// KubeQPS and KubeBurst bound status writes, events and reads (lease
	// renewals have their own unthrottled client).
	KubeQPS   float32
	KubeBurst int

	MetricsAddr, HealthAddr string
	ShutdownWait            time.Duration
	Resync                  time.Duration
	ReachabilityInterval    time.Duration
	DuplicateBackoffMin     time.Duration
	DuplicateBackoffMax     time.Duration
	ProbeWait               time.Duration
	Announce                gateway.AnnouncerOptions
	Peer                    PeerOptions
}

// PeerOptions configure the peer channel (docs/ha.md). Without KeyFile
// the Lease alone decides who bridges.
type PeerOptions struct {
	// KeyFile holds the shared key: 16, 24 or 32 bytes.
	KeyFile   string
	Port      int
	Heartbeat time.Duration
	DeadAfter time.Duration
}

// Validate refuses options that cannot work, naming the flag.
func (o *Options) Validate() error {
	if o.Role != gateway.RoleGateway && o.Role != gateway.RoleNode {
		return fmt.Errorf("--role: %q is not gateway or node", o.Role)
	}
	if o.NodeName == "" {
		if o.ConfigFile == "" {
			return errors.New("--node-name (or NODE_NAME) is required")
		}
		o.NodeName, _ = os.Hostname()
	}
	if o.ConfigFile != "" && !o.VTEP.IsValid() {
		return errors.New("--vtep: standalone mode (--config) needs the local VTEP address")
	}
	if o.KubeQPS < 0 || o.KubeBurst < 0 {
		return fmt.Errorf("--kube-api-qps %v / --kube-api-burst %d: must not be negative", o.KubeQPS, o.KubeBurst)
	}
	if o.Peer.KeyFile != "" {
		if o.Peer.Port < 1 || o.Peer.Port > 65535 {
			return fmt.Errorf("--peer-port: %d is outside 1-65535", o.Peer.Port)
		}
		if o.Peer.Heartbeat <= 0 {
			return fmt.Errorf("--peer-heartbeat: %s must be positive", o.Peer.Heartbeat)
		}
		if o.Peer.DeadAfter != 0 && o.Peer.DeadAfter <= o.Peer.Heartbeat {
			return fmt.Errorf("--peer-dead-after: %s must be longer than --peer-heartbeat %s", o.Peer.DeadAfter, o.Peer.Heartbeat)
		}
		if o.ConfigFile != "" {
			return errors.New("--peer-key-file: the peer channel needs the Lease (Kubernetes mode), not --config")
		}
	}
	return o.Lease.Validate()
}

// Run runs the agent until ctx ends or SIGTERM/SIGINT arrives on signals
// (then drains); SIGHUP reloads the standalone file.
func Run(ctx context.Context, o Options, signals <-chan os.Signal, log *zap.Logger) error {
	if err := o.Validate(); err != nil {
		return err
	}
	log = log.With(zap.String("node", o.NodeName), zap.String("role", string(o.Role)))
	ctx, stop := context.WithCancel(ctx)
	defer stop()

	// NETLINK_ROUTE only: some kernels refuse the XFRM socket the
	// library would also open.
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink handle: %w", err)
	}
	defer h.Close()
	dp := vlan.New(h, log.Named("vlan"))
	if caps, err := dp.Probe(); err != nil {
		log.Warn("kernel capability probe", zap.Error(err))
	} else {
		log.Info("kernel capabilities", zap.Bool("bridge", caps.Bridge), zap.Bool("vxlan", caps.VXLAN), zap.Bool("8021q", caps.VLAN))
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	trigger := gateway.NewTrigger()
	deps := gateway.Deps{DataPlane: dp, Links: hostLinks{}, Metrics: gateway.NewMetrics(reg), Trigger: trigger, Log: log}
	prober := gateway.LinkProber{Options: vlan.ProbeOptions{Wait: o.ProbeWait}}
	deps.Gate = gateway.NewGate(prober, o.DuplicateBackoffMin, o.DuplicateBackoffMax, log.Named("gate"), trigger.Fire)
	deps.Reach = gateway.NewReachability(prober, o.ReachabilityInterval, log.Named("reachability"), trigger.Fire)
	// The legacy-side sweep of Routed segments shares the reachability
	// check's schedule: both are ARP checks the runbook reads.
	deps.Sweep = gateway.NewSweeper(prober, o.ReachabilityInterval, log.Named("sweep"), trigger.Fire)

	var speaker *bgp.Speaker
	if o.Role == gateway.RoleGateway {
		var cleanup func()
		speaker, cleanup = startGatewayParts(ctx, o, &deps, dp, log)
		defer cleanup()
	}

	var reload func() error
	if o.ConfigFile != "" {
		src, err := gateway.NewFileSource(o.ConfigFile)
		if err != nil {
			return err
		}
		deps.Source, reload = src, src.Load
		deps.Sink = &gateway.LogStatus{Log: log.Named("status")}
		go watchFile(ctx, src, trigger, log)
	} else {
		cleanup, err := startKube(ctx, o, &deps, reg, log)
		if err != nil {
			return err
		}
		defer cleanup()
	}

	if o.Role == gateway.RoleGateway {
		stopLoop, err := startLoopProbe(o, &deps, dp, log)
		if err != nil {
			return err
		}
		defer stopLoop()
	}
	gwOpts := gateway.Options{NodeName: o.NodeName, Role: o.Role, LocalVTEP: o.VTEP, Resync: o.Resync}
	if deps.Peers != nil {
		gwOpts.HA = haOptions(o.Peer)
	}
	agent := gateway.NewAgent(gwOpts, deps)
	if err := agent.Adopt(); err != nil {
		log.Warn("adopt", zap.String("event", "adoptFailed"), zap.Error(err))
	}
	ready := serve(ctx, o, reg, agent.LastReport, log)
	// Drift repair: an owned link or entry deleted behind our back
	// triggers a reconcile within milliseconds.
	go func() {
		if err := dp.WatchDrift(ctx, trigger.Fire); err != nil && ctx.Err() == nil {
			log.Error("drift watch stopped; relying on --resync", zap.String("event", "driftWatchStopped"), zap.Error(err))
		}
	}()
	// Live migration: a VM's own announcement from its new node moves its
	// FDB entry before the API says so (gateway/moves.go).
	if w, err := vlan.NewMoveWatcherIn(nil, underlayVTEP(ctx, o, deps.Source, log), vlan.DefaultVXLANPort, agent.VMSighted); err != nil {
		log.Error("VM move watcher unavailable: a live-migrated VM is reached once its endpoint follows",
			zap.String("event", "moveWatchUnavailable"), zap.Error(err))
	} else {
		defer w.Close()
	}
	if err := agent.Reconcile(ctx); err != nil {
		log.Warn("first reconcile", zap.String("event", "firstReconcileFailed"), zap.Error(err))
	}
	ready.Store(true)
	done := make(chan struct{})
	go func() { agent.Run(ctx); close(done) }()

	waitForStop(ctx, signals, reload, trigger, log)
	ready.Store(false)
	drain(o, agent, speaker, func() { stop(); <-done }, log)
	return nil
}

// drain is the planned stop: graceful BGP shutdown and lease hand-over
// (Agent.Drain), then the loop ends (stopLoop) and the sessions close.
func drain(o Options, agent *gateway.Agent, speaker *bgp.Speaker, stopLoop func(), log *zap.Logger) {
	log.Info("shutting down", zap.String("event", "drain"))
	dctx, cancel := context.WithTimeout(context.Background(), o.ShutdownWait+10*time.Second)
	defer cancel()
	if err := agent.Drain(dctx, o.ShutdownWait); err != nil {
		log.Warn("drain", zap.String("event", "drainFailed"), zap.Error(err))
	}
	stopLoop()
	if speaker != nil {
		_ = speaker.Stop(dctx)
	}
	log.Info("stopped", zap.String("event", "stopped"))
}

// startGatewayParts builds what only a gateway has: the BFD TTL guard, the
// BGP speaker (its events drive the session metrics) and the announcer.
func startGatewayParts(ctx context.Context, o Options, deps *gateway.Deps, dp *vlan.DataPlane, log *zap.Logger) (*bgp.Speaker, func()) {
	var closers []func()
	// RFC 5881: single-hop BFD only with TTL 255, which GoBGP does not
	// check; the kernel drops the rest before the BFD listener.
	if guard, err := vlan.NewBFDGuard(); err != nil {
		log.Error("BFD TTL guard unavailable: BFD packets from off the link are accepted",
			zap.String("event", "bfdGuardUnavailable"), zap.Error(err))
	} else {
		closers = append(closers, func() { _ = guard.Close() })
	}
	// Stacked tags on the trunk must not ride into a segment (vlan.TagGuard).
	if tags, err := vlan.NewTagGuard(); err != nil {
		log.Error("VLAN tag guard unavailable: double-tagged frames may cross the sub-interfaces",
			zap.String("event", "tagGuardUnavailable"), zap.Error(err))
	} else {
		closers = append(closers, func() { _ = tags.Close() })
	}
	// Local egress: the gateway address of a segment is answered for on
	// the VXLAN side only (vlan.EgressGuard); without the guard the agent
	// refuses local egress.
	if egress, err := vlan.NewEgressGuard(); err != nil {
		log.Error("egress guard unavailable: local egress is refused",
			zap.String("event", "egressGuardUnavailable"), zap.Error(err))
	} else {
		deps.Egress = egress
		closers = append(closers, func() { _ = egress.Close() })
	}
	speaker := bgp.New(log.Named("bgp"))
	// Session state comes from BGP's own events: the metrics and the
	// status follow a session at once, not at the next resync.
	metrics, trigger := deps.Metrics, deps.Trigger
	speaker.Subscribe(func(ev bgp.PeerEvent) {
		metrics.PeerEvent(ev)
		trigger.Fire()
	})
	deps.Speaker = speaker
	// RARP refresh: the legacy MACs the bridge learned on the VLAN port.
	sender := &gateway.PortSender{Learned: dp.LearnedMACs}
	closers = append(closers, sender.Close)
	announcer := gateway.NewFrameAnnouncer(sender, o.Announce, log.Named("announcer"))
	go announcer.Run(ctx)
	deps.Announcer = announcer
	return speaker, func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
}

// waitForStop returns on SIGTERM/SIGINT or when ctx ends; SIGHUP reloads
// the standalone file (an invalid file keeps the previous configuration).
func waitForStop(ctx context.Context, signals <-chan os.Signal, reload func() error, trigger *gateway.Trigger, log *zap.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case sig := <-signals:
			if sig != syscall.SIGHUP {
				return
			}
			if reload != nil {
				if err := reload(); err != nil {
					log.Error("reload refused, keeping the previous configuration", zap.String("event", "configRefused"), zap.Error(err))
					continue
				}
				log.Info("configuration reloaded", zap.String("event", "configReloaded"))
			}
			trigger.Fire()
		}
	}
}

// hostLinks reads the host's interfaces.
type hostLinks struct{}

func (hostLinks) Exists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}
