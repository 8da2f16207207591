package kubeclient_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/netbridge-io/netbridge/internal/kubeclient"
	"github.com/netbridge-io/netbridge/internal/testenv"
)

func waitFor(t *testing.T, bound time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > bound {
			t.Fatalf("%s: not within %s", what, bound)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// TestReachability hangs (SIGSTOP) and stops a real kube-apiserver under
// the tracker: it must see both, hold a gated list until the server is
// back and release it at once, and Ping must name the server.
func TestReachability(t *testing.T) {
	e := testenv.Start(t, testenv.Options{})
	host := strings.TrimSuffix(e.Config.Host, "/")
	api, err := e.APIServer()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var changes []bool
	changed := make(chan bool, 16)
	r, err := kubeclient.NewReachability(e.Config, kubeclient.ReachabilityOptions{
		Logger:   testr.New(t),
		OnChange: func(up bool) { changed <- up },
	})
	if err != nil {
		t.Fatal(err)
	}
	go r.Run(ctx)
	waitFor(t, 5*time.Second, "reachable at start", r.Reachable)
	if err := r.Check(nil); err != nil {
		t.Fatalf("Check while reachable: %v", err)
	}
	if err := kubeclient.Ping(ctx, e.Config, 5*time.Second); err != nil {
		t.Fatalf("Ping while reachable: %v", err)
	}

	cs, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		t.Fatal(err)
	}
	lw := r.ListerWatcher(toolscache.NewListWatchFromClient(cs.CoreV1().RESTClient(), "namespaces", "", fields.Everything()))

	// Hung: probes time out (1 s interval, 2 s timeout, 2 failures).
	if err := api.Hang(); err != nil {
		t.Fatal(err)
	}
	detect := waitFor(t, 12*time.Second, "unreachable while hung", func() bool { return !r.Reachable() })
	if err := r.Check(nil); err == nil || !strings.Contains(err.Error(), host) {
		t.Fatalf("Check while hung = %v, want an error naming %s", err, host)
	}
	pingStart := time.Now()
	err = kubeclient.Ping(ctx, e.Config, 2*time.Second)
	ping := time.Since(pingStart)
	if err == nil || !strings.Contains(err.Error(), host) || !strings.Contains(err.Error(), "did not answer") || ping > 4*time.Second {
		t.Fatalf("Ping while hung = %v after %s, want 'did not answer' naming %s within 4s", err, ping, host)
	}
	listed := make(chan error, 1)
	go func() {
		_, err := lw.List(metav1.ListOptions{})
		listed <- err
	}()
	select {
	case err := <-listed:
		t.Fatalf("gated list returned while the server is hung: %v", err)
	case <-time.After(2 * time.Second):
	}
	if err := api.Resume(); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	select {
	case err := <-listed:
		if err != nil {
			t.Fatalf("gated list after resume: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("gated list not released within 5s of the server's return")
	}
	release := time.Since(resumed)
	waitFor(t, 3*time.Second, "reachable after resume", r.Reachable)

	// Stopped: refused at once.
	if err := api.Stop(); err != nil {
		t.Fatal(err)
	}
	stopDetect := waitFor(t, 6*time.Second, "unreachable while stopped", func() bool { return !r.Reachable() })
	if err := kubeclient.Ping(ctx, e.Config, 2*time.Second); err == nil || !strings.Contains(err.Error(), host) || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("Ping while stopped = %v, want 'unreachable' naming %s", err, host)
	}
	sctx, scancel := context.WithTimeout(ctx, time.Minute)
	defer scancel()
	if err := api.Start(sctx); err != nil {
		t.Fatal(err)
	}
	back := waitFor(t, 3*time.Second, "reachable after restart", r.Reachable)

	for len(changed) > 0 {
		changes = append(changes, <-changed)
	}
	if got, want := fmtBools(changes), "[true false true false true]"; got != want {
		t.Fatalf("transitions %s, want %s", got, want)
	}
	t.Logf("hang_detect_ms=%d ping_hung_ms=%d gate_release_ms=%d stop_detect_ms=%d restart_detect_ms=%d",
		detect.Milliseconds(), ping.Milliseconds(), release.Milliseconds(), stopDetect.Milliseconds(), back.Milliseconds())
}

func fmtBools(b []bool) string {
	var s []string
	for _, v := range b {
		if v {
			s = append(s, "true")
		} else {
			s = append(s, "false")
		}
	}
	return "[" + strings.Join(s, " ") + "]"
}
