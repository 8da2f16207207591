package gateway

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

// maxSweepAddresses bounds one sweep (a /22): a broader subnet is reported
// as not swept rather than flooding the legacy VLAN with ARP.
const maxSweepAddresses = 1022

// Sweeper sweeps, in the background, the IPv4 subnets of the segments the
// gateway holds in phase Routed with ARP probes on the VLAN side: whoever
// answers there is still on the legacy side, which the Routed → Completed
// preflight (netbridgectl segment advance) requires to be empty. It sweeps
// periodically rather than on request so the CLI needs no write access to
// the gateways and the result is always at most one interval old.
type Sweeper struct {
	prober   Prober
	interval time.Duration
	log      *zap.Logger
	onChange func()

	mu      sync.Mutex
	results map[SegmentKey]SweepResult
	last    map[SegmentKey]time.Time
	busy    map[SegmentKey]bool
}

// SweepResult is one finished sweep of a segment.
type SweepResult struct {
	At        time.Time
	Addresses int
	Answered  []SweepAnswer
	Error     string
}

// SweepAnswer is an address that answered, and the MAC that did.
type SweepAnswer struct {
	IP  netip.Addr
	MAC net.HardwareAddr
}

// NewSweeper sweeps each Routed segment at most once per interval.
func NewSweeper(p Prober, interval time.Duration, log *zap.Logger, onChange func()) *Sweeper {
	return &Sweeper{prober: p, interval: interval, log: log, onChange: onChange,
		results: map[SegmentKey]SweepResult{}, last: map[SegmentKey]time.Time{}, busy: map[SegmentKey]bool{}}
}

// Result is the last sweep of a segment.
func (s *Sweeper) Result(key SegmentKey) (SweepResult, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.results[key]
	return r, ok
}

// Retain forgets the segments no longer swept: a segment that leaves
// Routed (or this gateway) must not show a stale sweep when it returns.
func (s *Sweeper) Retain(keys map[SegmentKey]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.results {
		if !keys[k] {
			delete(s.results, k)
			delete(s.last, k)
		}
	}
}

// Request sweeps the request's addresses when due. Non-blocking.
func (s *Sweeper) Request(ctx context.Context, r sweepRequest) {
	s.mu.Lock()
	if s.busy[r.Key] || (!s.last[r.Key].IsZero() && time.Since(s.last[r.Key]) < s.interval) {
		s.mu.Unlock()
		return
	}
	s.busy[r.Key] = true
	s.last[r.Key] = time.Now()
	s.mu.Unlock()
	go s.sweep(ctx, r)
}

func (s *Sweeper) sweep(ctx context.Context, r sweepRequest) {
	res := SweepResult{Addresses: len(r.IPs), Error: r.Error}
	if r.Error == "" {
		answers, err := s.prober.Probe(ctx, r.Iface, r.IPs)
		if err != nil {
			res.Error = fmt.Sprintf("sweep on %s: %v", r.Iface, err)
		}
		for ip, mac := range answers {
			res.Answered = append(res.Answered, SweepAnswer{IP: ip, MAC: mac})
		}
		sort.Slice(res.Answered, func(i, j int) bool { return res.Answered[i].IP.Less(res.Answered[j].IP) })
	}
	res.At = time.Now()
	s.mu.Lock()
	delete(s.busy, r.Key)
	old, had := s.results[r.Key]
	s.results[r.Key] = res
	s.mu.Unlock()
	if !had || !sameSweep(old, res) {
		fields := []zap.Field{zap.String("event", "legacySweep"), zap.String("segment", r.Key.String()),
			zap.Int("addresses", res.Addresses), zap.Int("answered", len(res.Answered))}
		var by []string
		for _, a := range res.Answered {
			by = append(by, a.IP.String()+"="+a.MAC.String())
		}
		fields = append(fields, zap.Strings("answeredBy", by))
		if res.Error != "" {
			fields = append(fields, zap.String("error", res.Error))
		}
		s.log.Info("legacy side swept", fields...)
	}
	// Every sweep is reported (its time is what the CLI waits for).
	s.onChange()
}

func sameSweep(a, b SweepResult) bool {
	if a.Error != b.Error || len(a.Answered) != len(b.Answered) {
		return false
	}
	for i := range a.Answered {
		if a.Answered[i].IP != b.Answered[i].IP || a.Answered[i].MAC.String() != b.Answered[i].MAC.String() {
			return false
		}
	}
	return true
}

// sweepRequest is one segment's sweep: every host address of its IPv4
// subnets on its VLAN side, or why it cannot be swept.
type sweepRequest struct {
	Key   SegmentKey
	Iface string
	IPs   []netip.Addr
	Error string
}

// sweepRequests are the sweeps due on a gateway: the programmed segments in
// phase Routed whose VLAN it holds (only the active gateway sees the VLAN).
func sweepRequests(d Desired, role Role, attached map[SegmentKey]bool, segErr map[SegmentKey]string) []sweepRequest {
	if role != RoleGateway {
		return nil
	}
	var out []sweepRequest
	for _, s := range d.Segments {
		if _, bad := segErr[s.Key]; bad || !attached[s.Key] || s.Phase != PhaseRouted {
			continue
		}
		r := sweepRequest{Key: s.Key, Iface: vlanSide(s)}
		for _, sub := range s.Subnets {
			if !sub.Addr().Is4() {
				continue
			}
			hosts, err := subnetHosts(sub, maxSweepAddresses-len(r.IPs))
			if err != nil {
				r.IPs, r.Error = nil, err.Error()
				break
			}
			r.IPs = append(r.IPs, hosts...)
		}
		out = append(out, r)
	}
	return out
}

// subnetHosts are the host addresses of an IPv4 subnet (no network or
// broadcast address below /31), at most limit of them.
func subnetHosts(sub netip.Prefix, limit int) ([]netip.Addr, error) {
	sub = sub.Masked()
	bits := 32 - sub.Bits()
	if bits > 30 {
		return nil, fmt.Errorf("subnet %s is too broad to sweep (more than %d addresses)", sub, maxSweepAddresses)
	}
	n := 1 << bits
	first, last := 0, n-1
	if bits >= 2 {
		first, last = 1, n-2
	}
	if last-first+1 > limit {
		return nil, fmt.Errorf("subnet %s is too broad to sweep (more than %d addresses)", sub, maxSweepAddresses)
	}
	var out []netip.Addr
	a := sub.Addr()
	for i := 0; i < first; i++ {
		a = a.Next()
	}
	for i := first; i <= last; i++ {
		out = append(out, a)
		a = a.Next()
	}
	return out, nil
}

// addSweeps attaches the last sweep to the segments still being swept.
func (a *Agent) addSweeps(segs []SegmentReport, p *pass) {
	if a.deps.Sweep == nil {
		return
	}
	swept := map[SegmentKey]bool{}
	for _, r := range sweepRequests(p.d, a.opts.Role, p.attached, p.segErr) {
		swept[r.Key] = true
	}
	for i := range segs {
		if !swept[segs[i].Key] {
			continue
		}
		if res, ok := a.deps.Sweep.Result(segs[i].Key); ok {
			segs[i].Sweep = &res
		}
	}
}

// legacySweepStatus renders a sweep for the BridgeGateway status.
func legacySweepStatus(r *SweepResult) *nbv1.LegacySweep {
	if r == nil {
		return nil
	}
	out := &nbv1.LegacySweep{At: metav1.NewTime(r.At.Truncate(time.Millisecond)), Addresses: int32(r.Addresses), Error: r.Error}
	for _, a := range r.Answered {
		out.Answered = append(out.Answered, nbv1.SweepAnswer{IP: a.IP.String(), MAC: a.MAC.String()})
	}
	return out
}
