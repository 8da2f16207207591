// Command netbridge-gateway is the node agent: role gateway on edge nodes
// (VLAN ⇄ VXLAN bridging + BGP), role node on VM nodes (VXLAN + bridge).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/zapr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/flowcontrol"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/netbridge-io/netbridge/bgp"
	"github.com/netbridge-io/netbridge/gateway"
	"github.com/netbridge-io/netbridge/internal/scheme"
	"github.com/netbridge-io/netbridge/vlan"
)

type flags struct {
	role, nodeName, kubeconfig, namespace, config, vtep string
	leaseDuration, renewDeadline, retryPeriod           time.Duration
	metricsAddr, healthAddr                             string
	shutdownWait, resync, reachEvery                    time.Duration
	dupMin, dupMax, probeWait                           time.Duration
	logLevel                                            string
}

func main() {
	var f flags
	fs := flag.NewFlagSet("netbridge-gateway", flag.ExitOnError)
	fs.StringVar(&f.role, "role", "gateway", "gateway (edge node: VLAN ⇄ VXLAN + BGP) or node (VM node: VXLAN + bridge)")
	fs.StringVar(&f.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	fs.StringVar(&f.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file (default: in-cluster)")
	fs.StringVar(&f.namespace, "namespace", "netbridge-system", "namespace of the segment Leases and BGP password Secrets")
	fs.StringVar(&f.config, "config", "", "standalone mode: read segments, peers and endpoints from this YAML file (no API server)")
	fs.StringVar(&f.vtep, "vtep", "", "local VXLAN tunnel endpoint (default: node annotation netbridge.io/vtep, else InternalIP)")
	fs.DurationVar(&f.leaseDuration, "lease-duration", 15*time.Second, "segment lease duration")
	fs.DurationVar(&f.renewDeadline, "renew-deadline", 10*time.Second, "a holder that could not renew for this long detaches its VLAN (self-fencing)")
	fs.DurationVar(&f.retryPeriod, "retry-period", 2*time.Second, "interval between lease acquire/renew attempts")
	fs.StringVar(&f.metricsAddr, "metrics-bind-address", ":9650", "Prometheus metrics address (empty: off)")
	fs.StringVar(&f.healthAddr, "health-probe-bind-address", ":9651", "/healthz and /readyz address (empty: off)")
	fs.DurationVar(&f.shutdownWait, "graceful-shutdown-wait", 30*time.Second, "on SIGTERM, how long routes carry GRACEFUL_SHUTDOWN before they are withdrawn")
	fs.DurationVar(&f.resync, "resync", 30*time.Second, "full reconcile interval (drift repair)")
	fs.DurationVar(&f.reachEvery, "reachability-interval", 10*time.Second, "ARP check of active VMs across the segment")
	fs.DurationVar(&f.dupMin, "duplicate-backoff-min", time.Second, "first re-probe delay of an IP answered by another MAC")
	fs.DurationVar(&f.dupMax, "duplicate-backoff-max", 30*time.Second, "longest re-probe delay")
	fs.DurationVar(&f.probeWait, "probe-wait", 500*time.Millisecond, "how long a duplicate-address probe listens for answers")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	_ = fs.Parse(os.Args[1:])

	log, err := newLogger(f.logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := run(f, log); err != nil {
		log.Error("netbridge-gateway", zap.Error(err))
		_ = log.Sync()
		os.Exit(1)
	}
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

func run(f flags, log *zap.Logger) error {
	role := gateway.Role(f.role)
	if role != gateway.RoleGateway && role != gateway.RoleNode {
		return fmt.Errorf("--role: %q is not gateway or node", f.role)
	}
	if f.nodeName == "" {
		if f.config == "" {
			return errors.New("--node-name (or NODE_NAME) is required")
		}
		f.nodeName, _ = os.Hostname()
	}
	var vtep netip.Addr
	if f.vtep != "" {
		v, err := netip.ParseAddr(f.vtep)
		if err != nil {
			return fmt.Errorf("--vtep: %w", err)
		}
		vtep = v
	}
	timings := gateway.LeaseTimings{LeaseDuration: f.leaseDuration, RenewDeadline: f.renewDeadline, RetryPeriod: f.retryPeriod}
	if err := timings.Validate(); err != nil {
		return err
	}
	log = log.With(zap.String("node", f.nodeName), zap.String("role", f.role))
	// client-go and controller-runtime log through logr: same zap core.
	ctrllog.SetLogger(zapr.NewLogger(log.Named("k8s")))

	ctx, stop := context.WithCancel(context.Background())
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
	metrics := gateway.NewMetrics(reg)

	var agent *gateway.Agent
	trigger := func() {
		if agent != nil {
			agent.Trigger()
		}
	}
	var triggerReady atomic.Bool
	onChange := func() {
		if triggerReady.Load() {
			trigger()
		}
	}

	var speaker *bgp.Speaker
	var spk gateway.Speaker
	if role == gateway.RoleGateway {
		speaker = bgp.New(log.Named("bgp"))
		spk = speaker
	}
	prober := gateway.LinkProber{Options: vlan.ProbeOptions{Wait: f.probeWait}}
	gate := gateway.NewGate(prober, f.dupMin, f.dupMax, log.Named("gate"), onChange)
	reach := gateway.NewReachability(prober, f.reachEvery, log.Named("reachability"), onChange)

	var (
		source   gateway.Source
		election gateway.Leadership
		sink     gateway.StatusSink
		fileSrc  *gateway.FileSource
	)
	if f.config != "" {
		if !vtep.IsValid() {
			return errors.New("standalone mode needs --vtep")
		}
		fileSrc, err = gateway.NewFileSource(f.config)
		if err != nil {
			return err
		}
		source = fileSrc
		sink = &gateway.LogStatus{Log: log.Named("status")}
	} else {
		cfg, err := restConfig(f.kubeconfig)
		if err != nil {
			return err
		}
		// client-go's default (5 QPS) is too low for status, events and
		// reads on a busy gateway.
		cfg.QPS, cfg.Burst = 20, 50
		sch := scheme.New()
		ks, err := gateway.NewKubeSource(cfg, sch, f.namespace, f.nodeName)
		if err != nil {
			return err
		}
		var elect *gateway.Election
		onLease := func() {
			if elect != nil && triggerReady.Load() {
				elect.Poke()
			}
		}
		log.Info("waiting for the API server's caches")
		if err := ks.Start(ctx, onChange, onLease, log); err != nil {
			return err
		}
		source = ks
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return fmt.Errorf("clientset: %w", err)
		}
		c, err := client.New(cfg, client.Options{Scheme: sch})
		if err != nil {
			return fmt.Errorf("client: %w", err)
		}
		bc := record.NewBroadcaster()
		bc.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
		defer bc.Shutdown()
		rec := bc.NewRecorder(sch, corev1.EventSource{Component: "netbridge-gateway", Host: f.nodeName})
		sink = gateway.NewKubeStatus(c, rec, f.nodeName, role, log.Named("status"))
		if role == gateway.RoleGateway {
			// Lease renewals get their own client with no client-side
			// throttling: queued behind status writes and events they
			// would miss the renew deadline and fence a healthy gateway.
			lcfg := rest.CopyConfig(cfg)
			lcfg.RateLimiter = flowcontrol.NewFakeAlwaysRateLimiter()
			lcs, err := kubernetes.NewForConfig(lcfg)
			if err != nil {
				return fmt.Errorf("lease clientset: %w", err)
			}
			elect = gateway.NewElection(lcs.CoordinationV1(), f.namespace, f.nodeName, timings, log.Named("election"), onChange)
			election = elect
		}
	}

	agent = gateway.NewAgent(gateway.Options{NodeName: f.nodeName, Role: role, LocalVTEP: vtep, Resync: f.resync}, dp, spk, source, election, gate, reach, sink, metrics, log)
	if election != nil {
		// Kernel dead-man switch: if this process dies while it bridges a
		// VLAN that has a standby, the kernel stops bridging it when the
		// lease would have run out, before the standby attaches.
		if fence, err := vlan.NewFence(timings.RenewDeadline); err != nil {
			log.Error("kernel fence unavailable: a crashed gateway would keep bridging its VLANs", zap.Error(err))
		} else {
			agent.SetFence(fence)
		}
	}
	triggerReady.Store(true)
	if err := agent.Adopt(); err != nil {
		log.Warn("adopt", zap.Error(err))
	}
	var ready atomic.Bool
	serve(ctx, f, reg, &ready, log)

	if fileSrc != nil {
		go watchFile(ctx, fileSrc, agent, log)
	}
	// Drift repair: an owned link or entry deleted behind our back
	// triggers a reconcile within milliseconds.
	go func() {
		if err := dp.WatchDrift(ctx, agent.Trigger); err != nil && ctx.Err() == nil {
			log.Error("drift watch stopped; relying on --resync", zap.Error(err))
		}
	}()
	if err := agent.Reconcile(ctx); err != nil {
		log.Warn("first reconcile", zap.Error(err))
	}
	ready.Store(true)
	done := make(chan struct{})
	go func() { agent.Run(ctx); close(done) }()

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			if fileSrc != nil {
				if err := fileSrc.Load(); err != nil {
					log.Error("reload refused, keeping the previous configuration", zap.Error(err))
					continue
				}
				log.Info("configuration reloaded", zap.String("event", "configReloaded"))
			}
			agent.Trigger()
			continue
		}
		break
	}
	log.Info("shutting down", zap.String("event", "drain"))
	ready.Store(false)
	dctx, cancel := context.WithTimeout(context.Background(), f.shutdownWait+10*time.Second)
	defer cancel()
	if err := agent.Drain(dctx, f.shutdownWait); err != nil {
		log.Warn("drain", zap.Error(err))
	}
	stop()
	<-done
	if speaker != nil {
		_ = speaker.Stop(dctx)
	}
	log.Info("stopped")
	return nil
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

func serve(ctx context.Context, f flags, reg *prometheus.Registry, ready *atomic.Bool, log *zap.Logger) {
	start := func(addr string, mux *http.ServeMux) {
		if addr == "" {
			return
		}
		srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("http server", zap.String("addr", addr), zap.Error(err))
			}
		}()
		go func() { <-ctx.Done(); _ = srv.Close() }()
	}
	m := http.NewServeMux()
	m.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	hm := http.NewServeMux()
	hm.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	hm.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready: first reconcile pending or draining", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	if f.metricsAddr == f.healthAddr {
		m.Handle("/healthz", hm)
		m.Handle("/readyz", hm)
		start(f.metricsAddr, m)
		return
	}
	start(f.metricsAddr, m)
	start(f.healthAddr, hm)
}

// watchFile reloads the standalone configuration when its file changes.
// The folder is watched because editors replace files by renaming.
func watchFile(ctx context.Context, src *gateway.FileSource, agent *gateway.Agent, log *zap.Logger) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		log.Warn("file watch unavailable; use SIGHUP", zap.Error(err))
		return
	}
	defer w.Close()
	dir := filepath.Dir(src.Path())
	if err := w.Add(dir); err != nil {
		log.Warn("file watch unavailable; use SIGHUP", zap.String("dir", dir), zap.Error(err))
		return
	}
	// Writers truncate then write: act once the file has been quiet for a
	// moment, never on the intermediate states.
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-w.Events:
			if filepath.Clean(ev.Name) != filepath.Clean(src.Path()) || ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename) == 0 {
				continue
			}
			settle.Reset(200 * time.Millisecond)
		case <-settle.C:
			if err := src.Load(); err != nil {
				log.Error("reload refused, keeping the previous configuration", zap.Error(err))
				continue
			}
			log.Info("configuration reloaded", zap.String("event", "configReloaded"))
			agent.Trigger()
		case err := <-w.Errors:
			log.Warn("file watch", zap.Error(err))
		}
	}
}
