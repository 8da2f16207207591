package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"log/slog"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/server"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

const benchRoutes = 10000

// waitKernelCount polls the dc namespace's kernel table until it holds
// exactly n BGP IPv4 routes and returns how long that took from start.
func (l *lab) waitKernelCount(b *testing.B, n int, start time.Time) time.Duration {
	b.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		rs, err := l.frr.KernelRoutes(unix.AF_INET)
		if err != nil {
			b.Fatal(err)
		}
		if len(rs) == n {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			b.Fatalf("kernel has %d BGP routes after 2 min, want %d", len(rs), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkSpeaker10k measures, against a real FRR, the time from one
// Apply of 10,000 /32s until all are in FRR's kernel FIB, the withdrawal of
// all, a no-op re-apply, the heap, and the same add/withdraw done by a bare
// GoBGP server (no netbridge code) to the same FRR. Run with -benchtime=1x.
func BenchmarkSpeaker10k(b *testing.B) {
	for range b.N {
		benchSpeaker10k(b)
	}
}

func benchSpeaker10k(b *testing.B) {
	ctx := context.Background()
	l := newLab(b, frrOpts{})
	seg := netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/16", 100+randN(100)))
	routes := make([]Route, benchRoutes)
	base := seg.Addr().As4()
	for i := range routes {
		a := base
		a[2], a[3] = byte((i+1)>>8), byte(i+1)
		routes[i] = Route{Prefix: netip.PrefixFrom(netip.AddrFrom4(a), 32), Communities: []Community{NewCommunity(65000, 1)}}
	}
	peer := l.peer(frrOpts{})
	desired := func(rs []Route) Desired {
		d := l.desired([]Peer{peer}, rs...)
		d.AllowedPrefixes = []netip.Prefix{seg}
		return d
	}

	heap0 := heapInUse()
	s := New(nil) // no test logger: we measure the speaker, not log output
	defer s.Stop(ctx)
	if _, err := s.Apply(ctx, desired(nil)); err != nil {
		b.Fatal(err)
	}
	waitEstablished(b, s, l.dcV4)

	b.ResetTimer()
	start := time.Now()
	if _, err := s.Apply(ctx, desired(routes)); err != nil {
		b.Fatal(err)
	}
	applyDur := time.Since(start)
	addDur := l.waitKernelCount(b, benchRoutes, start)
	heap := heapInUse()

	st, _ := s.Status(ctx)
	updates0 := st.Peers[0].UpdatesSent
	start = time.Now()
	rep, err := s.Apply(ctx, desired(routes))
	reapplyDur := time.Since(start)
	if err != nil || rep.Changed() {
		b.Fatalf("re-apply changed %v: %v", rep.Changed(), err)
	}
	time.Sleep(time.Second)
	st, _ = s.Status(ctx)
	reapplyUpdates := st.Peers[0].UpdatesSent - updates0
	addUpdates := updates0

	start = time.Now()
	if _, err := s.Apply(ctx, desired(nil)); err != nil {
		b.Fatal(err)
	}
	delDur := l.waitKernelCount(b, 0, start)
	b.StopTimer()
	if err := s.Stop(ctx); err != nil {
		b.Fatal(err)
	}

	bareAdd, bareDel := bareGoBGP(b, l, peer, routes)

	b.ReportMetric(addDur.Seconds(), "add-to-fib-s")
	b.ReportMetric(applyDur.Seconds(), "apply-call-s")
	b.ReportMetric(delDur.Seconds(), "withdraw-from-fib-s")
	b.ReportMetric(reapplyDur.Seconds(), "reapply-s")
	b.ReportMetric(float64(reapplyUpdates), "reapply-updates")
	b.ReportMetric(float64(heap-min(heap, heap0))/(1<<20), "heap-MiB")
	b.ReportMetric(bareAdd.Seconds(), "bare-add-to-fib-s")
	b.ReportMetric(bareDel.Seconds(), "bare-withdraw-s")
	b.ReportMetric(addDur.Seconds()/bareAdd.Seconds(), "add-ratio")
	b.ReportMetric(delDur.Seconds()/bareDel.Seconds(), "withdraw-ratio")
	// The limit: the speaker (guards, policies, reconciliation) may cost
	// at most twice what a bare GoBGP server needs for the same routes.
	const maxRatio = 2.0
	for _, c := range []struct {
		what      string
		got, bare time.Duration
	}{{"add", addDur, bareAdd}, {"withdraw", delDur, bareDel}} {
		limit := time.Duration(maxRatio * float64(c.bare))
		b.Logf("%s: figure=%s limit=%s ratio=%.2f", c.what, c.got.Round(time.Millisecond), limit.Round(time.Millisecond), c.got.Seconds()/c.bare.Seconds())
		if c.got > limit {
			b.Errorf("%s of 10k routes took %s, over the limit %s (%.0f× the bare GoBGP %s)", c.what, c.got, limit, maxRatio, c.bare)
		}
	}
	b.Logf("10k /32: speaker add→FIB %s (Apply returned after %s, %d UPDATEs), withdraw %s; bare GoBGP add %s, withdraw %s; ratio add %.2f withdraw %.2f; re-apply %s with %d UPDATEs; heap with 10k routes %.1f MiB",
		addDur.Round(time.Millisecond), applyDur.Round(time.Millisecond), addUpdates, delDur.Round(time.Millisecond),
		bareAdd.Round(time.Millisecond), bareDel.Round(time.Millisecond),
		addDur.Seconds()/bareAdd.Seconds(), delDur.Seconds()/bareDel.Seconds(),
		reapplyDur.Round(time.Microsecond), reapplyUpdates, float64(heap-min(heap, heap0))/(1<<20))
}

// bareGoBGP is the ceiling: a GoBGP server with no policies and no
// netbridge code, adding and deleting the same paths one AddPath each.
func bareGoBGP(b *testing.B, l *lab, peer Peer, routes []Route) (add, del time.Duration) {
	ctx := context.Background()
	srv := server.NewBgpServer(server.LoggerOption(slog.New(newZapHandler(zap.NewNop(), nil)), nil))
	go srv.Serve()
	defer srv.Stop()
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{Asn: gwASN, RouterId: l.hostV4.String(), ListenPort: -1}}); err != nil {
		b.Fatal(err)
	}
	if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: toAPIPeer(peer, false)}); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		up := false
		_ = srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
			up = p.GetState().GetSessionState() == api.PeerState_SESSION_STATE_ESTABLISHED
		})
		if up {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("bare GoBGP: session not established")
		}
		time.Sleep(50 * time.Millisecond)
	}
	paths := make([]*apiutil.Path, len(routes))
	for i, r := range routes {
		p, err := toAPIPath(r, gwASN)
		if err != nil {
			b.Fatal(err)
		}
		paths[i] = p
	}
	start := time.Now()
	for _, p := range paths {
		if _, err := srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{p}}); err != nil {
			b.Fatal(err)
		}
	}
	add = l.waitKernelCount(b, len(routes), start)
	start = time.Now()
	for _, p := range paths {
		if err := srv.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{p}}); err != nil {
			b.Fatal(err)
		}
	}
	del = l.waitKernelCount(b, 0, start)
	return add, del
}
