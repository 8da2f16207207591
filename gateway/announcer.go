package gateway

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/netbridge-io/netbridge/vlan"
)

// FrameSender sends the announcer's frames (vlan ports in production).
type FrameSender interface {
	GratuitousARP(iface string, ip netip.Addr, mac net.HardwareAddr) error
	// UnsolicitedNA is the IPv6 twin of GratuitousARP.
	UnsolicitedNA(iface string, ip netip.Addr, mac net.HardwareAddr) error
	AnnounceMAC(iface string, mac net.HardwareAddr) error
	// LearnedMACs are the MACs the bridge learned on a port (legacy hosts
	// behind the VLAN side).
	LearnedMACs(port string) ([]net.HardwareAddr, error)
}

// AnnouncerOptions tune the repeats and the rate.
type AnnouncerOptions struct {
	// Schedule is when an announcement is sent, counted from when it
	// became desired. One frame can be lost, and a legacy switch that
	// flushed its table a moment later must still learn: MetalLB repeats
	// for 5 s, so do we. Default 0, 0.5 s, 1 s, 2 s, 3.5 s, 5 s.
	Schedule []time.Duration
	// Rate and Burst bound the frames per second over all segments, so a
	// failover of 1,000 VMs does not storm the VLAN. Default 1000/s, 100.
	Rate  float64
	Burst int
}

func (o AnnouncerOptions) withDefaults() AnnouncerOptions {
	if len(o.Schedule) == 0 {
		o.Schedule = []time.Duration{0, 500 * time.Millisecond, time.Second, 2 * time.Second, 3500 * time.Millisecond, 5 * time.Second}
	}
	if o.Rate <= 0 {
		o.Rate = 1000
	}
	if o.Burst <= 0 {
		o.Burst = 100
	}
	return o
}

// FrameAnnouncer keeps announcements as desired state (Set) and sends each
// new one on the schedule: gratuitous ARP (IPv4) or an unsolicited
// Neighbor Advertisement (IPv6) out of the VLAN side for Active VM
// addresses, under one rate limit, and a RARP per legacy MAC learned on
// the VLAN port into the
// VXLAN side. An announcement removed from the desired state stops; one
// that comes back (a takeover) starts its schedule again.
type FrameAnnouncer struct {
	sender  FrameSender
	opts    AnnouncerOptions
	limiter *rate.Limiter
	log     *zap.Logger
	wake    chan struct{}

	mu    sync.Mutex
	addrs map[string]*scheduled[AddressAnnouncement]
	macs  map[string]*scheduled[MACRefresh]
}

type scheduled[T any] struct {
	what  T
	since time.Time
	sent  int // schedule slots done
}

func (s *scheduled[T]) due(now time.Time, sched []time.Duration) bool {
	return s.sent < len(sched) && !now.Before(s.since.Add(sched[s.sent]))
}

func (s *scheduled[T]) next(sched []time.Duration) (time.Time, bool) {
	if s.sent >= len(sched) {
		return time.Time{}, false
	}
	return s.since.Add(sched[s.sent]), true
}

// NewFrameAnnouncer returns an announcer; Run sends.
func NewFrameAnnouncer(sender FrameSender, opts AnnouncerOptions, log *zap.Logger) *FrameAnnouncer {
	opts = opts.withDefaults()
	return &FrameAnnouncer{sender: sender, opts: opts, limiter: rate.NewLimiter(rate.Limit(opts.Rate), opts.Burst), log: log,
		wake: make(chan struct{}, 1), addrs: map[string]*scheduled[AddressAnnouncement]{}, macs: map[string]*scheduled[MACRefresh]{}}
}

func addrKey(a AddressAnnouncement) string {
	return a.Iface + "|" + a.IP.String() + "|" + a.MAC.String()
}
func macKey(m MACRefresh) string { return m.VLANPort + "|" + m.VXLANDevice }

// Set implements Announcer.
func (f *FrameAnnouncer) Set(a Announcements) {
	now := time.Now()
	f.mu.Lock()
	f.addrs = retainScheduled(f.addrs, a.Addresses, addrKey, now)
	f.macs = retainScheduled(f.macs, a.MACs, macKey, now)
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// retainScheduled keeps the schedule of announcements still desired and
// starts one for each new announcement.
func retainScheduled[T any](old map[string]*scheduled[T], want []T, key func(T) string, now time.Time) map[string]*scheduled[T] {
	out := make(map[string]*scheduled[T], len(want))
	for _, w := range want {
		k := key(w)
		if s, ok := old[k]; ok {
			s.what = w
			out[k] = s
			continue
		}
		out[k] = &scheduled[T]{what: w, since: now}
	}
	return out
}

// Run sends due announcements until ctx ends.
func (f *FrameAnnouncer) Run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		arps, macs, next := f.takeDue(time.Now())
		// The legacy MACs first: a handful of frames into the VXLAN side that
		// every VM's reply path waits for, which must not queue behind one
		// GARP per VM under the limiter (1,000 VMs: ~0.9 s at 1,000/s).
		for _, m := range macs {
			f.refreshMACs(ctx, m.what, m.sent)
		}
		for _, a := range arps {
			f.sendAddress(ctx, a.what, a.sent)
		}
		if ctx.Err() != nil {
			return
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(time.Until(next), 0)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-f.wake:
			if !timer.Stop() {
				<-timer.C
			}
		case <-timer.C:
		}
	}
}

// takeDue marks the due announcements sent (copies are returned with the
// slot number) and returns when the next one is due.
func (f *FrameAnnouncer) takeDue(now time.Time) ([]scheduled[AddressAnnouncement], []scheduled[MACRefresh], time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var next time.Time
	consider := func(t time.Time, ok bool) {
		if ok && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	var arps []scheduled[AddressAnnouncement]
	for _, s := range f.addrs {
		if s.due(now, f.opts.Schedule) {
			arps = append(arps, scheduled[AddressAnnouncement]{what: s.what, since: s.since, sent: s.sent})
			s.sent++
		}
		consider(s.next(f.opts.Schedule))
	}
	var macs []scheduled[MACRefresh]
	for _, s := range f.macs {
		if s.due(now, f.opts.Schedule) {
			macs = append(macs, scheduled[MACRefresh]{what: s.what, since: s.since, sent: s.sent})
			s.sent++
		}
		consider(s.next(f.opts.Schedule))
	}
	return arps, macs, next
}

// sendAddress sends one address announcement: gratuitous ARP for IPv4,
// an unsolicited NA for IPv6, both under the one limiter.
func (f *FrameAnnouncer) sendAddress(ctx context.Context, a AddressAnnouncement, slot int) {
	if f.limiter.Wait(ctx) != nil {
		return
	}
	v6 := a.IP.Is6()
	var err error
	if v6 {
		err = f.sender.UnsolicitedNA(a.Iface, a.IP, a.MAC)
	} else {
		err = f.sender.GratuitousARP(a.Iface, a.IP, a.MAC)
	}
	if err != nil {
		ev := "garpFailed"
		if v6 {
			ev = "naFailed"
		}
		f.log.Warn("address announcement", zap.String("event", ev), zap.String("iface", a.Iface),
			zap.String("ip", a.IP.String()), zap.Error(err))
		return
	}
	if slot == 0 {
		ev := "garpSent"
		if v6 {
			ev = "naSent"
		}
		f.log.Info("endpoint announced", zap.String("event", ev), zap.String("segment", a.Segment.String()),
			zap.String("ip", a.IP.String()), zap.String("mac", a.MAC.String()))
	}
}

// refreshMACs announces every legacy MAC learned on the VLAN port into
// the VXLAN side; read again at each slot, since the bridge of a gateway
// that just attached learns them as the legacy hosts speak.
func (f *FrameAnnouncer) refreshMACs(ctx context.Context, m MACRefresh, slot int) {
	macs, err := f.sender.LearnedMACs(m.VLANPort)
	if err != nil {
		f.log.Debug("learned MACs", zap.String("port", m.VLANPort), zap.Error(err))
		return
	}
	sent := 0
	for _, mac := range macs {
		if f.limiter.Wait(ctx) != nil {
			return
		}
		if err := f.sender.AnnounceMAC(m.VXLANDevice, mac); err != nil {
			f.log.Warn("announce legacy MAC", zap.String("event", "rarpFailed"), zap.String("iface", m.VXLANDevice),
				zap.String("mac", mac.String()), zap.Error(err))
			continue
		}
		sent++
	}
	if sent > 0 {
		f.log.Debug("legacy MACs announced", zap.String("event", "rarpSent"), zap.String("segment", m.Segment.String()),
			zap.Int("count", sent), zap.Int("slot", slot))
	}
}

// PortSender sends through raw sockets (vlan.Port), one per interface,
// kept open while frames go out and reopened after an error (the
// interface may have been recreated).
type PortSender struct {
	// Learned lists a port's learned MACs (vlan's bridge FDB reader).
	Learned func(port string) ([]net.HardwareAddr, error)

	mu    sync.Mutex
	ports map[string]*vlan.Port
}

func (s *PortSender) with(iface string, fn func(*vlan.Port) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ports == nil {
		s.ports = map[string]*vlan.Port{}
	}
	p := s.ports[iface]
	if p == nil {
		var err error
		if p, err = vlan.OpenPort(iface); err != nil {
			return err
		}
		s.ports[iface] = p
	}
	err := fn(p)
	if err != nil {
		_ = p.Close()
		delete(s.ports, iface)
	}
	return err
}

// GratuitousARP implements FrameSender.
func (s *PortSender) GratuitousARP(iface string, ip netip.Addr, mac net.HardwareAddr) error {
	return s.with(iface, func(p *vlan.Port) error { return p.GratuitousARP(ip, mac) })
}

// UnsolicitedNA implements FrameSender.
func (s *PortSender) UnsolicitedNA(iface string, ip netip.Addr, mac net.HardwareAddr) error {
	return s.with(iface, func(p *vlan.Port) error { return p.UnsolicitedNA(ip, mac) })
}

// AnnounceMAC implements FrameSender.
func (s *PortSender) AnnounceMAC(iface string, mac net.HardwareAddr) error {
	return s.with(iface, func(p *vlan.Port) error { return p.AnnounceMAC(mac) })
}

// LearnedMACs implements FrameSender.
func (s *PortSender) LearnedMACs(port string) ([]net.HardwareAddr, error) {
	if s.Learned == nil {
		return nil, nil
	}
	return s.Learned(port)
}

// Close closes the open sockets.
func (s *PortSender) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, p := range s.ports {
		_ = p.Close()
		delete(s.ports, k)
	}
}
