package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/gateway"
)

// serve starts /metrics and /healthz, /readyz, /status; the returned flag
// is the readiness (false until the first reconcile, and while draining).
// /status is the last report as BridgeGateway status in JSON: in
// standalone mode there is no BridgeGateway object to read it from.
func serve(ctx context.Context, o Options, reg *prometheus.Registry, status func() gateway.Report, log *zap.Logger) *atomic.Bool {
	ready := &atomic.Bool{}
	start := func(addr string, mux *http.ServeMux) {
		if addr == "" {
			return
		}
		srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("http server", zap.String("event", "httpServerFailed"), zap.String("addr", addr), zap.Error(err))
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
	hm.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) {
		r := status()
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(StatusDocument{Node: r.NodeName, Role: string(r.Role), Status: gateway.StatusFromReport(r)})
	})
	if o.MetricsAddr == o.HealthAddr {
		m.Handle("/healthz", hm)
		m.Handle("/readyz", hm)
		m.Handle("/status", hm)
		start(o.MetricsAddr, m)
		return ready
	}
	start(o.MetricsAddr, m)
	start(o.HealthAddr, hm)
	return ready
}

// StatusDocument is what /status serves.
type StatusDocument struct {
	Node   string                   `json:"node"`
	Role   string                   `json:"role"`
	Status nbv1.BridgeGatewayStatus `json:"status"`
}

// watchFile reloads the standalone configuration when its file changes.
// The folder is watched because editors replace files by renaming.
func watchFile(ctx context.Context, src *gateway.FileSource, trigger *gateway.Trigger, log *zap.Logger) {
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
				log.Error("reload refused, keeping the previous configuration", zap.String("event", "configRefused"), zap.Error(err))
				continue
			}
			log.Info("configuration reloaded", zap.String("event", "configReloaded"))
			trigger.Fire()
		case err := <-w.Errors:
			log.Warn("file watch", zap.Error(err))
		}
	}
}
