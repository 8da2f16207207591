package gateway

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/netbridge-io/netbridge/vlan"
)

// LinkProber probes through a raw socket opened per call.
type LinkProber struct{ Options vlan.ProbeOptions }

// Probe implements Prober.
func (l LinkProber) Probe(ctx context.Context, iface string, ips []netip.Addr) (map[netip.Addr]net.HardwareAddr, error) {
	port, err := vlan.OpenPort(iface)
	if err != nil {
		return nil, err
	}
	defer port.Close()
	return port.Probe(ctx, ips, l.Options)
}

// Gate is the activation gate: before an IP is first advertised, a probe
// on the VLAN side (ARP for IPv4, RFC 4862 DAD for IPv6) must find nobody
// else holding it. Probes run in
// the background; verdicts are read by the reconcile loop.
type Gate struct {
	prober     Prober
	log        *zap.Logger
	onChange   func()
	minBackoff time.Duration
	maxBackoff time.Duration

	mu    sync.Mutex
	state map[netip.Addr]*gateEntry
	busy  map[string]bool // iface with a probe in flight
}

type gateEntry struct {
	verdict probeVerdict
	owner   net.HardwareAddr // the endpoint's own MAC: its answer is no duplicate
	seenMAC net.HardwareAddr // who answered, when duplicate
	next    time.Time
	backoff time.Duration
}

// NewGate returns a gate whose re-probe backoff for duplicates grows from
// minBackoff to maxBackoff.
func NewGate(p Prober, minBackoff, maxBackoff time.Duration, log *zap.Logger, onChange func()) *Gate {
	return &Gate{prober: p, log: log, onChange: onChange, minBackoff: minBackoff, maxBackoff: maxBackoff,
		state: map[netip.Addr]*gateEntry{}, busy: map[string]bool{}}
}

// Verdicts returns a copy of the current verdicts.
func (g *Gate) Verdicts() map[netip.Addr]probeVerdict {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[netip.Addr]probeVerdict, len(g.state))
	for ip, e := range g.state {
		out[ip] = e.verdict
	}
	return out
}

// Duplicate returns the MAC that answered for ip, if it is a duplicate.
func (g *Gate) Duplicate(ip netip.Addr) (net.HardwareAddr, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.state[ip]
	if e == nil || e.verdict != verdictDuplicate {
		return nil, false
	}
	return e.seenMAC, true
}

// Adopt marks IPs as already cleared (found activated in the kernel on
// restart): they are not probed again.
func (g *Gate) Adopt(ips []netip.Addr) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, ip := range ips {
		if _, ok := g.state[ip]; !ok {
			g.state[ip] = &gateEntry{verdict: verdictClear}
		}
	}
}

// Retain forgets IPs no longer wanted, so a later re-activation probes again.
func (g *Gate) Retain(want map[netip.Addr]bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for ip := range g.state {
		if !want[ip] {
			delete(g.state, ip)
		}
	}
}

// Request starts a probe on iface for those ips that are pending, or
// duplicate and due for a re-probe. owners maps each IP to its endpoint's
// MAC. Non-blocking.
func (g *Gate) Request(ctx context.Context, iface string, ips []netip.Addr, owners map[netip.Addr]net.HardwareAddr) {
	g.mu.Lock()
	if g.busy[iface] {
		g.mu.Unlock()
		return
	}
	now := time.Now()
	var due []netip.Addr
	for _, ip := range ips {
		e := g.state[ip]
		if e == nil {
			e = &gateEntry{verdict: verdictPending}
			g.state[ip] = e
		}
		e.owner = owners[ip]
		if e.verdict == verdictClear || now.Before(e.next) {
			continue
		}
		due = append(due, ip)
	}
	if len(due) == 0 {
		g.mu.Unlock()
		return
	}
	g.busy[iface] = true
	g.mu.Unlock()

	go g.probe(ctx, iface, due)
}

// probe runs one probe and records the verdicts: a duplicate backs off
// (doubling up to maxBackoff), a failure stays pending and retries.
func (g *Gate) probe(ctx context.Context, iface string, due []netip.Addr) {
	answers, err := g.prober.Probe(ctx, iface, due)
	g.mu.Lock()
	delete(g.busy, iface)
	changed := false
	retry := time.Duration(0)
	for _, ip := range due {
		e := g.state[ip]
		if e == nil {
			continue // forgotten meanwhile
		}
		if err != nil {
			// Cannot probe: stay pending (never advertise unprobed),
			// retry after the minimum backoff.
			e.next = time.Now().Add(g.minBackoff)
			retry = g.minBackoff
			continue
		}
		mac, answered := answers[ip]
		if answered && !sameMAC(mac, e.owner) {
			if e.verdict != verdictDuplicate || !sameMAC(e.seenMAC, mac) {
				changed = true
				g.log.Warn("duplicate address on the VLAN side: not advertising", zap.String("event", "duplicateAddress"), zap.String("ip", ip.String()),
					zap.String("answeredBy", mac.String()), zap.String("iface", iface))
			}
			e.verdict, e.seenMAC = verdictDuplicate, mac
			if e.backoff == 0 {
				e.backoff = g.minBackoff
			} else if e.backoff *= 2; e.backoff > g.maxBackoff {
				e.backoff = g.maxBackoff
			}
			e.next = time.Now().Add(e.backoff)
			if retry == 0 || e.backoff < retry {
				retry = e.backoff
			}
			continue
		}
		if e.verdict != verdictClear {
			changed = true
			g.log.Info("address free on the VLAN side", zap.String("event", "addressFree"), zap.String("ip", ip.String()), zap.String("iface", iface))
		}
		e.verdict, e.seenMAC, e.backoff = verdictClear, nil, 0
	}
	g.mu.Unlock()
	if err != nil {
		g.log.Warn("duplicate-address probe failed", zap.String("event", "probeFailed"), zap.String("iface", iface), zap.Error(err))
	}
	if changed {
		g.onChange()
	}
	if retry > 0 {
		// Wake the reconcile loop when the re-probe is due.
		time.AfterFunc(retry, g.onChange)
	}
}

func sameMAC(a, b net.HardwareAddr) bool {
	return a != nil && b != nil && a.String() == b.String()
}
