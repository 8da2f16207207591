package controller_test

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller"
	"github.com/netbridge-io/netbridge/controller/kubevirt"
	"github.com/netbridge-io/netbridge/internal/benchreport"
)

// BenchmarkBulkVMIs creates 10,000 VMIs over 100 segments with 16 parallel
// writers and measures how long until all 10,000 BridgeEndpoints exist and
// are correct, the memory at the end, and the writes of a resync after
// convergence. In the same run it measures the limit: the API server
// taking the very same writes (the VMIs and, by kind and count, what the
// controller wrote) from plain clients with the controller's concurrency
// and client settings, with no controller logic. Run with -benchtime=1x:
// one iteration is the whole scenario. NETBRIDGE_BENCH_PER_SEGMENT shrinks
// the run and renames the figures with it.
func BenchmarkBulkVMIs(b *testing.B) {
	const (
		segments = 100
		writers  = 16
		ns       = "bench"
		bareNS   = "bench-bare"
	)
	perSeg := 100
	if v := os.Getenv("NETBRIDGE_BENCH_PER_SEGMENT"); v != "" {
		// Smaller runs for debugging; the figure that counts is 100.
		if _, err := fmt.Sscanf(v, "%d", &perSeg); err != nil || perSeg <= 0 {
			b.Fatalf("NETBRIDGE_BENCH_PER_SEGMENT=%q: want a positive number", v)
		}
	}
	total := segments * perSeg
	figure := fmt.Sprintf("controller_%s_vmis_to_endpoints", countName(total))
	cfg := controller.Config{SyncPeriod: 5 * time.Second, SegmentWorkers: 16, WriteParallelism: 4}
	ctx := context.Background()
	for iter := 0; iter < b.N; iter++ {
		if iter > 0 {
			b.Fatal("run with -benchtime=1x: one iteration is the whole 10,000-VMI scenario")
		}
		var segs []nbv1.Segment
		for i := 0; i < segments; i++ {
			segs = append(segs, nbv1.Segment{Name: fmt.Sprintf("s%d", i), VLANID: int32(1001 + i), VNI: int32(20001 + i),
				Subnets: []string{fmt.Sprintf("172.16.%d.0/24", i)}})
		}
		bc := bridgeConfig("bench", map[string]string{"netbridge.io/gateway": "bench"}, segs...)
		mustCreate(b, bc)
		createNamespace(b, ns, nil)

		run := startManager(b, cfg)

		// The same client settings as the manager's (startManager: no
		// client-side rate limit).
		rc := rest.CopyConfig(env.Config)
		rc.QPS = -1
		writer, err := client.New(rc, client.Options{Scheme: env.Scheme})
		if err != nil {
			b.Fatal(err)
		}
		// Let the manager's caches sync first: the figure is the steady
		// state, not the informers' start.
		time.Sleep(2 * time.Second)

		start := time.Now()
		if err := createVMIs(ctx, writer, ns, segments, perSeg, writers); err != nil {
			b.Fatalf("create VMI: %v", err)
		}
		created := time.Since(start)

		correct := func() ([]nbv1.BridgeEndpoint, error) {
			var eps nbv1.BridgeEndpointList
			if err := writer.List(ctx, &eps, client.InNamespace(ns)); err != nil {
				return nil, err
			}
			var ok []nbv1.BridgeEndpoint
			for _, e := range eps.Items {
				var s, j int
				if _, err := fmt.Sscanf(e.Spec.VMI, "vm-%d-%d", &s, &j); err != nil {
					continue
				}
				if strings.Join(e.Spec.IPs, ",") == fmt.Sprintf("172.16.%d.%d", s, j+1) && e.Spec.Segment == fmt.Sprintf("s%d", s) &&
					e.Spec.State == nbv1.StateStaged && len(e.Status.Conditions) == 0 {
					ok = append(ok, e)
				}
			}
			return ok, nil
		}
		var done []nbv1.BridgeEndpoint
		// Five minutes after the last create (on a loaded machine the
		// creates alone can take minutes), and at least one look.
		for wait := time.Now().Add(5 * time.Minute); ; {
			if done, err = correct(); err != nil {
				b.Fatal(err)
			}
			if len(done) == total || time.Now().After(wait) {
				break
			}
			if time.Since(start)%(5*time.Second) < 250*time.Millisecond {
				b.Logf("after %s: %d endpoints correct, %d writes", time.Since(start).Round(time.Second), len(done), run.writes.n.Load())
			}
			time.Sleep(250 * time.Millisecond)
		}
		converged := time.Since(start)
		if len(done) != total {
			b.Fatalf("only %d of %d endpoints correct after %s (VMIs created in %s)", len(done), total, converged, created)
		}
		writesToConverge := run.writes.n.Load()
		kinds := run.writes.byKind()

		// Quiet, then one resync period and a bit; the reconcile count
		// proves a resync ran in the window.
		deadline := time.Now().Add(time.Minute)
		for {
			before := run.writes.n.Load()
			time.Sleep(2 * time.Second)
			if run.writes.n.Load() == before || time.Now().After(deadline) {
				break
			}
		}
		before, reconcilesBefore := run.writes.n.Load(), reconcileTotal(b)
		time.Sleep(cfg.SyncPeriod + time.Second)
		resyncWrites, resyncReconciles := run.writes.n.Load()-before, reconcileTotal(b)-reconcilesBefore
		if resyncWrites > 0 {
			b.Logf("writes during the resync window: %v", run.writes.recent())
		}
		if resyncReconciles < segments {
			b.Errorf("resync window: %v reconciles, want at least one per segment (%d): no resync happened", resyncReconciles, segments)
		}

		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		rss := rssKiB()
		run.stop()

		// The limit, in the same run: the same writes with no controller.
		createNamespace(b, bareNS, nil)
		var final nbv1.BridgeConfig
		if err := writer.Get(ctx, client.ObjectKeyFromObject(bc), &final); err != nil {
			b.Fatal(err)
		}
		bareBC := bridgeConfig("bench-bare", map[string]string{"netbridge.io/gateway": "bench-bare"}, segs...)
		mustCreate(b, bareBC)
		bareBC.Status = final.Status
		limit, err := bareWrites(ctx, writer, bareNS, bareBC, done, kinds, func() error {
			return createVMIs(ctx, writer, bareNS, segments, perSeg, writers)
		}, cfg.SegmentWorkers*cfg.WriteParallelism)
		if err != nil {
			b.Fatalf("limit: %v", err)
		}

		benchreport.Report(b, benchreport.Figure{Name: figure, Unit: "s", Ours: converged.Seconds(), Limit: limit.Seconds(),
			Goal: 1.1, Dir: benchreport.AtMost, Note: "the API server taking the same writes from plain clients, same concurrency"})
		b.ReportMetric(created.Seconds(), "s-create-vmis")
		// The fewest writes that converge: one create per endpoint (the
		// endpoints start with no conditions, so no status write).
		benchreport.Report(b, benchreport.Figure{Name: figure + "_writes", Unit: "writes", Ours: float64(writesToConverge), Limit: float64(total),
			Goal: 1.1, Dir: benchreport.AtMost, Note: "one create per endpoint; ours counts every write, BridgeConfig status and events too"})
		b.Logf("%s writes_to_converge=%d creates=%d endpoints=%d", figure, writesToConverge, kinds["POST bridgeendpoints"], total)
		b.ReportMetric(float64(writesToConverge), "writes-to-converge")
		b.ReportMetric(float64(resyncWrites), "writes-on-resync")
		b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "MiB-heap-inuse")
		b.ReportMetric(float64(rss)/1024, "MiB-rss-process")
		b.Logf("%d VMIs / %d segments: VMIs created in %s, all endpoints correct after %s (%.0f endpoints/s); API server alone, same writes: %s; "+
			"%d writes to converge %v, %d writes and %v reconciles on a resync; heap in use %.0f MiB, process RSS %.0f MiB (controller + test client, same process)",
			total, segments, created, converged, float64(total)/converged.Seconds(), limit, writesToConverge, kinds, resyncWrites, resyncReconciles,
			float64(ms.HeapInuse)/(1<<20), float64(rss)/1024)

		for _, n := range []string{ns, bareNS} {
			_ = writer.DeleteAllOf(ctx, kubevirt.NewObject(), client.InNamespace(n))
			_ = writer.DeleteAllOf(ctx, &nbv1.BridgeEndpoint{}, client.InNamespace(n))
		}
		_ = writer.Delete(ctx, bc)
		_ = writer.Delete(ctx, bareBC)
	}
}

// countName is how the figures name a count: 10000 → "10k".
func countName(n int) string {
	if n%1000 == 0 {
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

// createVMIs creates perSeg VMIs on each of segments segments in ns with
// the given number of parallel writers.
func createVMIs(ctx context.Context, writer client.Client, ns string, segments, perSeg, writers int) error {
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for k := w; k < segments*perSeg; k += writers {
				s, j := k/perSeg, k%perSeg
				u, err := kubevirt.ToUnstructured(&kubevirt.VMI{
					Namespace: ns, Name: fmt.Sprintf("vm-%d-%d", s, j),
					Labels: map[string]string{nbv1.LabelSegment: fmt.Sprintf("bench.s%d", s)},
					Annotations: map[string]string{
						nbv1.AnnotationIPs: fmt.Sprintf("172.16.%d.%d", s, j+1),
						nbv1.AnnotationMAC: fmt.Sprintf("02:00:00:00:%02x:%02x", s, j),
					},
				})
				if err == nil {
					err = writer.Create(ctx, u)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// bareWrites is the API server's own limit for the controller's work: the
// VMIs (vmis) and, at the same time, the endpoint writes the controller
// sent, replayed by kind from plain clients with the controller's write
// concurrency into ns, and its BridgeConfig status reports on bc (a
// BridgeConfig no controller watches, carrying the status the controller
// last wrote). Every kind the controller wrote is replayed but events (best
// effort for the controller too); a kind this cannot replay is an error,
// so the limit never silently shrinks.
func bareWrites(ctx context.Context, writer client.Client, ns string, bc *nbv1.BridgeConfig, eps []nbv1.BridgeEndpoint, kinds map[string]int64,
	vmis func() error, parallel int) (time.Duration, error) {
	var jobs []func() error
	creates := kinds["POST bridgeendpoints"]
	for k, n := range kinds {
		switch k {
		case "POST bridgeendpoints", "POST events", "PATCH events":
			// Events are best effort for the controller too.
		case "PUT bridgeendpoints/status", "PATCH bridgeendpoints/status", "PUT bridgeendpoints", "PATCH bridgeendpoints":
			for i := int64(0); i < n; i++ {
				e := &eps[int(i)%len(eps)]
				jobs = append(jobs, func() error {
					var cur nbv1.BridgeEndpoint
					if err := writer.Get(ctx, client.ObjectKey{Namespace: ns, Name: e.Name}, &cur); err != nil {
						return err
					}
					cur.Annotations = map[string]string{"bench/replay": fmt.Sprint(i)}
					if strings.HasSuffix(k, "/status") {
						return writer.Status().Update(ctx, &cur)
					}
					return writer.Update(ctx, &cur)
				})
			}
		case "PUT bridgeconfigs/status", "PATCH bridgeconfigs/status":
			// The controller's status reports (counts per segment), replayed
			// on a BridgeConfig no controller watches, each one a change, one
			// after the other: the controller too writes one BridgeConfig's
			// status from one worker.
			jobs = append(jobs, func() error {
				for i := int64(0); i < n; i++ {
					var cur nbv1.BridgeConfig
					if err := writer.Get(ctx, client.ObjectKey{Name: bc.Name}, &cur); err != nil {
						return err
					}
					cur.Status = *bc.Status.DeepCopy()
					cur.Status.EndpointCount = int32(i + 1)
					if err := writer.Status().Update(ctx, &cur); err != nil {
						return err
					}
				}
				return nil
			})
		default:
			return 0, fmt.Errorf("cannot replay the controller's %d writes of kind %q", n, k)
		}
	}
	if int(creates) < len(eps) {
		return 0, fmt.Errorf("controller created %d endpoints, %d exist", creates, len(eps))
	}
	start := time.Now()
	errs := make(chan error, 2)
	go func() { errs <- vmis() }()
	go func() {
		work := make(chan func() error)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var firstErr error
		for w := 0; w < parallel; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range work {
					if err := j(); err != nil {
						mu.Lock()
						firstErr = cmp.Or(firstErr, err)
						mu.Unlock()
					}
				}
			}()
		}
		for i := range eps {
			e := eps[i]
			work <- func() error {
				c := &nbv1.BridgeEndpoint{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: e.Name, Labels: e.Labels}, Spec: e.Spec}
				return writer.Create(ctx, c)
			}
		}
		// Updates only after the creates they touch: as the controller.
		for _, j := range jobs {
			work <- j
		}
		close(work)
		wg.Wait()
		errs <- firstErr
	}()
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

// reconcileTotal is the sum of controller-runtime's reconcile counter
// over every controller in this process.
func reconcileTotal(b *testing.B) float64 {
	mfs, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		b.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "controller_runtime_reconcile_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func rssKiB() int64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			var kib int64
			_, _ = fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "VmRSS:")), "%d", &kib)
			return kib
		}
	}
	return 0
}
