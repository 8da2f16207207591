package gateway

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Reachability checks, in the background, that active VMs answer ARP
// across the segment (from the gateway's VXLAN side): what
// `netbridgectl verify` reports as "reachable".
type Reachability struct {
	prober   Prober
	interval time.Duration
	log      *zap.Logger
	onChange func()

	mu      sync.Mutex
	results map[netip.Addr]ReachResult
	last    map[string]time.Time // iface → last probe start
	busy    map[string]bool
}

// ReachResult is the last check of one IP.
type ReachResult struct {
	Reachable bool
	At        time.Time
	// AnsweredBy is who answered (another MAC than the VM's is a problem).
	AnsweredBy net.HardwareAddr
}

// NewReachability checks each segment at most once per interval.
func NewReachability(p Prober, interval time.Duration, log *zap.Logger, onChange func()) *Reachability {
	return &Reachability{prober: p, interval: interval, log: log, onChange: onChange,
		results: map[netip.Addr]ReachResult{}, last: map[string]time.Time{}, busy: map[string]bool{}}
}

// Result returns the last check of ip.
func (r *Reachability) Result(ip netip.Addr) (ReachResult, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	res, ok := r.results[ip]
	return res, ok
}

// Request probes ips on iface when due (new IPs are due at once).
func (r *Reachability) Request(ctx context.Context, iface string, ips []netip.Addr, owners map[netip.Addr]net.HardwareAddr) {
	var v4 []netip.Addr
	r.mu.Lock()
	fresh := false
	for _, ip := range ips {
		if ip.Is4() {
			v4 = append(v4, ip)
			if _, seen := r.results[ip]; !seen {
				fresh = true
			}
		}
	}
	if len(v4) == 0 || r.busy[iface] || (!fresh && time.Since(r.last[iface]) < r.interval) {
		r.mu.Unlock()
		return
	}
	r.busy[iface] = true
	r.last[iface] = time.Now()
	r.mu.Unlock()
	go func() {
		answers, err := r.prober.Probe(ctx, iface, v4)
		now := time.Now()
		changed := false
		r.mu.Lock()
		delete(r.busy, iface)
		if err == nil {
			for _, ip := range v4 {
				mac, ok := answers[ip]
				res := ReachResult{Reachable: ok && sameMAC(mac, owners[ip]), At: now, AnsweredBy: mac}
				if old, had := r.results[ip]; !had || old.Reachable != res.Reachable {
					changed = true
				}
				r.results[ip] = res
			}
		}
		r.mu.Unlock()
		if err != nil {
			r.log.Debug("reachability probe", zap.String("iface", iface), zap.Error(err))
			return
		}
		if changed {
			r.onChange()
		}
	}()
}
