package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"

	"log/slog"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/server"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/netbridge-io/netbridge/internal/benchreport"
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

// benchRounds is how many times each figure is taken: the summary uses
// the median, and prints min and max beside it.
const benchRounds = 5

// BenchmarkSpeaker10k measures, against a real FRR, the time from one
// Apply of 10,000 /32s until all are in FRR's kernel FIB and the
// withdrawal of all, as medians of 5 rounds, each round followed by the
// same add/withdraw from a bare GoBGP server (no netbridge code) to the
// same FRR, so the load of the machine falls on both alike. The first
// round also measures a no-op re-apply and the heap. Run with
// -benchtime=1x.
func BenchmarkSpeaker10k(b *testing.B) {
	for range b.N {
		benchSpeaker10k(b)
	}
}

// speakerRound is one round's figures for our speaker.
type speakerRound struct {
	add, apply, del, reapply time.Duration
	addUpdates, reapplyUpd   uint64
	heapMiB                  float64
}

func benchSpeaker10k(b *testing.B) {
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
	var ours []speakerRound
	var bareAdd, bareDel []time.Duration
	for r := 0; r < benchRounds; r++ {
		ours = append(ours, speakerOnce(b, l, peer, seg, routes))
		a, d := bareGoBGP(b, l, peer, routes)
		bareAdd, bareDel = append(bareAdd, a), append(bareDel, d)
	}
	first := ours[0]
	var add, del []time.Duration
	for _, o := range ours {
		add, del = append(add, o.add), append(del, o.del)
	}
	b.ReportMetric(first.apply.Seconds(), "apply-call-s")
	b.ReportMetric(first.reapply.Seconds(), "reapply-s")
	b.ReportMetric(float64(first.reapplyUpd), "reapply-updates")
	b.ReportMetric(first.heapMiB, "heap-MiB")
	// The limit: the speaker (guards, policies, reconciliation) may cost
	// at most twice what a bare GoBGP server needs for the same routes;
	// the goal is 1.05×.
	const maxRatio = 2.0
	for _, c := range []struct {
		what      string
		got, bare []time.Duration
	}{{"add", add, bareAdd}, {"withdraw", del, bareDel}} {
		got, bare := median(c.got), median(c.bare)
		benchreport.Report(b, benchreport.Figure{Name: "bgp_" + c.what + "_10k_to_fib", Unit: "s", Ours: got.Seconds(), Limit: bare.Seconds(),
			Goal: 1.05, Dir: benchreport.AtMost, Note: fmt.Sprintf("bare GoBGP to the same FRR; medians of %d", benchRounds)})
		b.Logf("bgp_%s_10k ours: median %s min %s max %s; bare GoBGP: median %s min %s max %s (rounds ours %v, bare %v)", c.what,
			got.Round(time.Millisecond), slices.Min(c.got).Round(time.Millisecond), slices.Max(c.got).Round(time.Millisecond),
			bare.Round(time.Millisecond), slices.Min(c.bare).Round(time.Millisecond), slices.Max(c.bare).Round(time.Millisecond),
			roundAll(c.got), roundAll(c.bare))
		if limit := time.Duration(maxRatio * float64(bare)); got > limit {
			b.Errorf("%s of 10k routes took %s (median), over the limit %s (%.0f× the bare GoBGP %s)", c.what, got, limit, maxRatio, bare)
		}
	}
	b.Logf("10k /32, first round: Apply returned after %s, %d UPDATEs; re-apply %s with %d UPDATEs; heap with 10k routes %.1f MiB",
		first.apply.Round(time.Millisecond), first.addUpdates, first.reapply.Round(time.Microsecond), first.reapplyUpd, first.heapMiB)
}

// speakerOnce runs one round with a fresh speaker: add all routes, a
// no-op re-apply, withdraw all, stop.
func speakerOnce(b *testing.B, l *lab, peer Peer, seg netip.Prefix, routes []Route) speakerRound {
	ctx := context.Background()
	desired := func(rs []Route) Desired {
		d := l.desired([]Peer{peer}, rs...)
		d.AllowedPrefixes = []netip.Prefix{seg}
		return d
	}
	var o speakerRound
	heap0 := heapInUse()
	s := New(nil) // no test logger: we measure the speaker, not log output
	defer s.Stop(ctx)
	if _, err := s.Apply(ctx, desired(nil)); err != nil {
		b.Fatal(err)
	}
	waitEstablished(b, s, l.dcV4)

	start := time.Now()
	if _, err := s.Apply(ctx, desired(routes)); err != nil {
		b.Fatal(err)
	}
	o.apply = time.Since(start)
	o.add = l.waitKernelCount(b, len(routes), start)
	heap := heapInUse()
	o.heapMiB = float64(heap-min(heap, heap0)) / (1 << 20)

	st, _ := s.Status(ctx)
	o.addUpdates = st.Peers[0].UpdatesSent
	start = time.Now()
	rep, err := s.Apply(ctx, desired(routes))
	o.reapply = time.Since(start)
	if err != nil || rep.Changed() {
		b.Fatalf("re-apply changed %v: %v", rep.Changed(), err)
	}
	time.Sleep(time.Second)
	st, _ = s.Status(ctx)
	o.reapplyUpd = st.Peers[0].UpdatesSent - o.addUpdates

	start = time.Now()
	if _, err := s.Apply(ctx, desired(nil)); err != nil {
		b.Fatal(err)
	}
	o.del = l.waitKernelCount(b, 0, start)
	if err := s.Stop(ctx); err != nil {
		b.Fatal(err)
	}
	return o
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
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
