package controller_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller"
	"github.com/netbridge-io/netbridge/controller/kubevirt"
)

// BenchmarkBulkVMIs creates 10,000 VMIs over 100 segments with 16 parallel
// writers and measures how long until all 10,000 BridgeEndpoints exist and
// are correct, the memory at the end, and the writes of a resync after
// convergence. Run with -benchtime=1x: one iteration is the whole scenario.
func BenchmarkBulkVMIs(b *testing.B) {
	const (
		segments = 100
		writers  = 16
		ns       = "bench"
	)
	perSeg := 100
	if v := os.Getenv("NETBRIDGE_BENCH_PER_SEGMENT"); v != "" {
		// Smaller runs for debugging; the figure that counts is 100.
		if _, err := fmt.Sscanf(v, "%d", &perSeg); err != nil || perSeg <= 0 {
			b.Fatalf("NETBRIDGE_BENCH_PER_SEGMENT=%q: want a positive number", v)
		}
	}
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

		run := startManager(b, controller.Config{SyncPeriod: 5 * time.Second, SegmentWorkers: 16, WriteParallelism: 4})

		cfg := rest.CopyConfig(env.Config)
		cfg.QPS = -1
		writer, err := client.New(cfg, client.Options{Scheme: env.Scheme})
		if err != nil {
			b.Fatal(err)
		}
		// Let the manager's caches sync first: the figure is the steady
		// state, not the informers' start.
		time.Sleep(2 * time.Second)

		start := time.Now()
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
		for err := range errs {
			b.Fatalf("create VMI: %v", err)
		}
		created := time.Since(start)

		correct := func() (int, error) {
			var eps nbv1.BridgeEndpointList
			if err := writer.List(ctx, &eps, client.InNamespace(ns)); err != nil {
				return 0, err
			}
			n := 0
			for _, e := range eps.Items {
				var s, j int
				if _, err := fmt.Sscanf(e.Spec.VMI, "vm-%d-%d", &s, &j); err != nil {
					continue
				}
				if strings.Join(e.Spec.IPs, ",") == fmt.Sprintf("172.16.%d.%d", s, j+1) && e.Spec.Segment == fmt.Sprintf("s%d", s) &&
					e.Spec.State == nbv1.StateStaged && len(e.Status.Conditions) == 0 {
					n++
				}
			}
			return n, nil
		}
		var n int
		for time.Since(start) < 5*time.Minute {
			if n, err = correct(); err != nil {
				b.Fatal(err)
			}
			if n == segments*perSeg {
				break
			}
			if time.Since(start)%(5*time.Second) < 250*time.Millisecond {
				b.Logf("after %s: %d endpoints correct, %d writes", time.Since(start).Round(time.Second), n, run.writes.n.Load())
			}
			time.Sleep(250 * time.Millisecond)
		}
		converged := time.Since(start)
		if n != segments*perSeg {
			var eps nbv1.BridgeEndpointList
			_ = writer.List(ctx, &eps, client.InNamespace(ns), client.Limit(1))
			b.Fatalf("only %d of %d endpoints correct after %s; sample %+v", n, segments*perSeg, converged, eps.Items)
		}
		writesToConverge := run.writes.n.Load()

		// Quiet, then one resync period and a bit.
		deadline := time.Now().Add(time.Minute)
		for {
			before := run.writes.n.Load()
			time.Sleep(2 * time.Second)
			if run.writes.n.Load() == before || time.Now().After(deadline) {
				break
			}
		}
		before := run.writes.n.Load()
		time.Sleep(6 * time.Second)
		resyncWrites := run.writes.n.Load() - before
		if resyncWrites > 0 {
			b.Logf("writes during the resync window: %v", run.writes.recent())
		}

		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		rss := rssKiB()

		b.ReportMetric(created.Seconds(), "s-create-10k-vmis")
		b.ReportMetric(converged.Seconds(), "s-until-10k-endpoints")
		b.ReportMetric(float64(writesToConverge), "writes-to-converge")
		b.ReportMetric(float64(resyncWrites), "writes-on-resync")
		b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "MiB-heap-inuse")
		b.ReportMetric(float64(rss)/1024, "MiB-rss-process")
		b.Logf("%d VMIs / %d segments: VMIs created in %s, all endpoints correct after %s (%.0f endpoints/s); "+
			"%d writes to converge, %d writes on a resync; heap in use %.0f MiB, process RSS %.0f MiB (controller + test client, same process)",
			segments*perSeg, segments, created, converged, float64(segments*perSeg)/converged.Seconds(), writesToConverge, resyncWrites,
			float64(ms.HeapInuse)/(1<<20), float64(rss)/1024)

		run.stop()
		_ = writer.DeleteAllOf(ctx, kubevirt.NewObject(), client.InNamespace(ns))
		_ = writer.DeleteAllOf(ctx, &nbv1.BridgeEndpoint{}, client.InNamespace(ns))
		_ = writer.Delete(ctx, bc)
	}
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
