package controller_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller"
	"github.com/netbridge-io/netbridge/controller/kubevirt"
	"github.com/netbridge-io/netbridge/internal/testenv"
)

// env is the API server shared by the tests of this package: starting one
// takes seconds, and every test uses its own names, VLANs and subnets.
var env *testenv.Env

func TestMain(m *testing.M) {
	ctrllog.SetLogger(logr.Discard())
	var err error
	env, err = testenv.StartEnv(testenv.Options{ExtraCRDPaths: []string{testenv.KubeVirtCRDPath(), testenv.MultusNADCRDPath(), testenv.ForkliftCRDPath()}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start kube-apiserver:", err)
		os.Exit(1)
	}
	code := func() int {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := testenv.WaitCRDsEstablished(ctx, env.Client, append([]string{testenv.KubeVirtVMICRDName, testenv.MultusNADCRDName, "bridgeendpoints.netbridge.io"}, testenv.ForkliftCRDNames()...)...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: controller.DefaultNamespace}}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}()
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stop kube-apiserver:", err)
	}
	os.Exit(code)
}

// writeCounter counts the writes a manager sends, except leader-election
// lease traffic, through a RoundTripper on its rest.Config.
type writeCounter struct {
	n     atomic.Int64
	mu    sync.Mutex
	last  []string
	kinds map[string]int64
}

func (w *writeCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(r *http.Request) (*http.Response, error) {
		if r.Method != http.MethodGet && !strings.Contains(r.URL.Path, "/leases") {
			w.n.Add(1)
			w.mu.Lock()
			w.last = append(w.last, r.Method+" "+r.URL.Path)
			if w.kinds == nil {
				w.kinds = map[string]int64{}
			}
			w.kinds[r.Method+" "+resourceOf(r.URL.Path)]++
			if len(w.last) > 20 {
				w.last = w.last[1:]
			}
			w.mu.Unlock()
		}
		return rt.RoundTrip(r)
	})
}

// byKind is how many writes of each kind ("POST bridgeendpoints",
// "PUT bridgeendpoints/status") the manager sent.
func (w *writeCounter) byKind() map[string]int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]int64, len(w.kinds))
	for k, v := range w.kinds {
		out[k] = v
	}
	return out
}

// resourceOf is the resource (and subresource) an API path names:
// /apis/G/V/namespaces/NS/RES/NAME/SUB → RES/SUB.
func resourceOf(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	i := slices.Index(parts, "namespaces")
	switch {
	case i >= 0 && len(parts) > i+2:
		parts = parts[i+2:]
	case len(parts) > 3 && parts[0] == "apis":
		parts = parts[3:]
	case len(parts) > 2 && parts[0] == "api":
		parts = parts[2:]
	}
	if len(parts) >= 3 {
		return parts[0] + "/" + parts[2]
	}
	return parts[0]
}

func (w *writeCounter) recent() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.last...)
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

type running struct {
	mgr    manager.Manager
	writes *writeCounter
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// startManager runs a controller manager in-process against env.
func startManager(t testing.TB, c controller.Config) *running {
	t.Helper()
	wc := &writeCounter{}
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS = -1
	cfg.Wrap(wc.wrap)
	if c.Logger.GetSink() == nil {
		c.Logger = zapr.NewLogger(zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)))
	}
	mgr, err := controller.NewManager(cfg, c)
	if err != nil {
		t.Fatalf("new manager: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{mgr: mgr, writes: wc, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- mgr.Start(ctx) }()
	t.Cleanup(r.stop)
	return r
}

func (r *running) stop() { r.once.Do(r.doStop) }

func (r *running) doStop() {
	start := time.Now()
	r.cancel()
	select {
	case <-r.done:
	case <-time.After(30 * time.Second):
	}
	if d := time.Since(start); d > 2*time.Second {
		fmt.Fprintf(os.Stderr, "manager stop took %s\n", d)
	}
}

// eventually polls fn until it returns nil or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, fn func() error) time.Duration {
	t.Helper()
	start := time.Now()
	var err error
	for time.Since(start) < timeout {
		if err = fn(); err == nil {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s: %v", what, timeout, err)
	return 0
}

func mustCreate(t testing.TB, obj client.Object) {
	t.Helper()
	if err := env.Client.Create(context.Background(), obj); err != nil {
		t.Fatalf("create %T %s/%s: %v", obj, obj.GetNamespace(), obj.GetName(), err)
	}
}

func createNamespace(t testing.TB, name string, labels map[string]string) {
	t.Helper()
	mustCreate(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}})
}

func createNode(t testing.TB, name, internalIP, vtep string, labels map[string]string) {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if vtep != "" {
		n.Annotations = map[string]string{nbv1.AnnotationVTEP: vtep}
	}
	mustCreate(t, n)
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: internalIP}}
	if err := env.Client.Status().Update(context.Background(), n); err != nil {
		t.Fatalf("node %s status: %v", name, err)
	}
}

// createVMI creates a VMI labelled for segment and sets its status.
func createVMI(t testing.TB, ns, name, segment string, annotations map[string]string, st kubevirt.Status) *unstructured.Unstructured {
	t.Helper()
	u, err := kubevirt.ToUnstructured(&kubevirt.VMI{
		Namespace: ns, Name: name,
		Labels:      map[string]string{nbv1.LabelSegment: segment},
		Annotations: annotations,
	})
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, u)
	setVMIStatus(t, ns, name, st)
	return u
}

func getVMI(t testing.TB, ns, name string) *unstructured.Unstructured {
	t.Helper()
	u := kubevirt.NewObject()
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, u); err != nil {
		t.Fatalf("get vmi %s/%s: %v", ns, name, err)
	}
	return u
}

func setVMIStatus(t testing.TB, ns, name string, st kubevirt.Status) {
	t.Helper()
	u := getVMI(t, ns, name)
	if err := kubevirt.SetStatus(u, st); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Status().Update(context.Background(), u); err != nil {
		t.Fatalf("vmi %s/%s status: %v", ns, name, err)
	}
}

func annotateVMI(t testing.TB, ns, name, key, value string) {
	t.Helper()
	u := getVMI(t, ns, name)
	a := u.GetAnnotations()
	if a == nil {
		a = map[string]string{}
	}
	a[key] = value
	u.SetAnnotations(a)
	if err := env.Client.Update(context.Background(), u); err != nil {
		t.Fatalf("annotate vmi %s/%s: %v", ns, name, err)
	}
}

func getEndpoint(ns, name string) (*nbv1.BridgeEndpoint, error) {
	var ep nbv1.BridgeEndpoint
	err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &ep)
	return &ep, err
}

func endpointGone(ns, name string) error {
	_, err := getEndpoint(ns, name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("endpoint %s/%s still exists", ns, name)
}

// findEvent looks for a Warning event with reason about the VMI.
func findEvent(ns, vmi, reason, contains string) error {
	var evs eventsv1.EventList
	if err := env.Client.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
		return err
	}
	for _, e := range evs.Items {
		if e.Regarding.Name == vmi && e.Regarding.Kind == "VirtualMachineInstance" && e.Reason == reason && e.Type == corev1.EventTypeWarning &&
			strings.Contains(e.Note, contains) {
			return nil
		}
	}
	return fmt.Errorf("no Warning event %s on vmi %s/%s (%d events in namespace)", reason, ns, vmi, len(evs.Items))
}

func bridgeConfig(name string, gwSel map[string]string, segs ...nbv1.Segment) *nbv1.BridgeConfig {
	return &nbv1.BridgeConfig{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: nbv1.BridgeConfigSpec{
			GatewaySelector: metav1.LabelSelector{MatchLabels: gwSel},
			Uplink:          nbv1.UplinkSpec{Interface: "eth1"},
			Segments:        segs,
		},
	}
}

func deleteOnCleanup(t testing.TB, obj client.Object) {
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), obj) })
}
