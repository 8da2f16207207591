package vlan

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/zap"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Loop probe: the frame-level check that no second bridge joins a VLAN
// and its VNI (DESIGN.md "loop-probe fencing"). A bridging gateway sends a
// small authenticated frame into both sides of its segment; a gateway
// whose VLAN port is bridged and receives a gateway's probe on that port,
// inbound, knows that two bridges exist. The package only detects and
// reports: who yields is the agent's decision (it knows the Lease).
//
// The frame is harmless to legacy hosts and VMs: its destination is a
// locally administered multicast MAC that no host joins, so NICs drop it in
// hardware or the stack drops it for its unknown EtherType; no protocol
// reacts to it. Switches flood it (non-IP multicast is never pruned by
// IGMP snooping), which is what makes it travel around a loop. It is not a
// 01:80:c2:00:00:0x address: bridges never forward those.

// LoopProbeEtherType is the IEEE 802 "local experimental" EtherType 1.
const LoopProbeEtherType = 0x88B5

// LoopProbeMAC returns the probes' destination MAC, for capture filters
// and switch ACLs: multicast (bit 0) and locally administered (bit 1),
// "nblp" for netbridge loop probe.
func LoopProbeMAC() net.HardwareAddr { return net.HardwareAddr{0x03, 0x6e, 0x62, 0x6c, 0x70, 0x01} }

// Probe payload (after the Ethernet header), big endian:
//
//	0  magic "NBLP"   4  version     5  flags (bit 0: sent into the VXLAN side,
//	                                          bit 1: the sender holds the Lease)
//	6  VNI (4)        10 seq (8)     18 sent at, Unix ns (8)
//	26 epoch (8)      34 sender length  35 sender
//	35+n HMAC-SHA256 truncated to 16 bytes
//
// Version 2 added the epoch and the holding flag: a receiver decides who
// yields from the probe alone, without trusting a peer view that may be
// stale exactly when two bridges exist.
//
// The HMAC covers everything before it, with a key shared by the gateways:
// a host on the VLAN cannot forge a probe and make a gateway yield.
const (
	probeMagic    = "NBLP"
	probeVersion  = 2
	probeHeader   = 35
	probeMACLen   = 16
	flagOverlay   = 1
	flagHolding   = 2
	minProbeKey   = 16
	maxSenderName = 253
)

// Detection reports a probe that proves a second bridge on a segment.
type Detection struct {
	// VNI of the segment whose VLAN port received the probe.
	VNI uint32
	// Port is that VLAN port.
	Port string
	// From is the sending gateway (LoopProbeOptions.Self on its side).
	From string
	// Own: the probe was ours, sent into the VXLAN side, and came back
	// through another bridge onto our VLAN port.
	Own bool
	// At is when the probe was received.
	At time.Time
	// SentAt is the sender's timestamp. A probe counts if our port is
	// bridged when it is read, so a gateway that just took over can see
	// the previous holder's last probe, sent before it detached: compare
	// SentAt with the handover before acting on such a detection.
	SentAt time.Time
	// FromHolding and FromEpoch are the sender's ProbedSegment.Holding
	// and Epoch when it sent the probe (ours when Own).
	FromHolding bool
	FromEpoch   uint64
}

// ProbedSegment is the desired probing of one segment.
type ProbedSegment struct {
	VNI uint32
	// Bridge is the segment's bridge (default BridgeName(VNI)). A probe
	// counts only while VLANPort is one of its ports.
	Bridge string
	// VXLAN is the segment's VXLAN device (default VXLANName(VNI)).
	VXLAN string
	// VLANPort is the VLAN side (Segment.VLANSide()), where probes are
	// listened for (sent ones leave through Bridge). A standby's detached
	// port is listened on too if it exists, so that a bridge made behind
	// the agent's back is seen; empty: nothing to listen on.
	VLANPort string
	// Sending: this gateway believes it bridges the segment and probes.
	Sending bool
	// Holding and Epoch go into the probes (see Detection): whether the
	// sender holds the segment's Lease, and the Lease epoch it bridges at.
	// A change restarts the segment's sender.
	Holding bool
	Epoch   uint64
}

func (s ProbedSegment) withDefaults() ProbedSegment {
	if s.Bridge == "" {
		s.Bridge = BridgeName(s.VNI)
	}
	if s.VXLAN == "" {
		s.VXLAN = VXLANName(s.VNI)
	}
	return s
}

// LoopProbeOptions configure a LoopProbe.
type LoopProbeOptions struct {
	// Self identifies this gateway in its probes (the node name).
	Self string
	// Key authenticates probes; the same on every gateway, ≥ 16 bytes.
	Key []byte
	// Interval between probes of a sending segment (default 50ms).
	Interval time.Duration
	// MaxAge: a probe stamped further from the receiver's clock than this
	// is a replay (default 2s; gateways are NTP-synchronised).
	MaxAge time.Duration
	// OnDetect is called for every probe that proves a second bridge, in
	// order, on one goroutine of the LoopProbe: a slow callback delays the
	// next detections (detaching a port is fine). It may call Set, not
	// Close. Required.
	OnDetect func(Detection)
	// Log receives state changes (key "event"); nil: no logging.
	Log *zap.Logger
}

// LoopProbeStats are counters since NewLoopProbe, for metrics.
type LoopProbeStats struct {
	Sent       uint64 // probe frames sent (two per tick: VLAN and VXLAN side)
	SendErrors uint64 // probe frames the kernel refused
	Received   uint64 // authentic, fresh probes received on VLAN ports
	Invalid    uint64 // probe frames that failed parsing or the HMAC
	Replayed   uint64 // authentic probes too old or already seen
	Reflected  uint64 // our own VLAN-side probes sent back to us
	Detections uint64 // OnDetect calls
}

// LoopProbe sends and listens for loop probes on a set of segments.
type LoopProbe struct {
	opts LoopProbeOptions
	log  *zap.Logger
	// ns is the namespace sockets and netlink work in; nil: the caller's.
	ns *netns.NsHandle
	hm sync.Mutex // netlink.Handle requests are serialised
	h  *netlink.Handle

	mu     sync.Mutex
	segs   map[uint32]*probedSeg
	closed bool

	// events decouples OnDetect from the listeners, so that a callback
	// that calls Set (stopping a listener) cannot wait on itself.
	events     chan Detection
	dispatched sync.WaitGroup

	sent, sendErrors, received, invalid, replayed, reflected, detections atomic.Uint64

	// keys: the key probes are signed with and the keys they are
	// accepted under (SetKeys); replaced whole, read per frame.
	keys atomic.Pointer[probeKeys]
}

// probeKeys is the loop probe's key set during a peer key rotation: send
// with use, accept a probe signed with use or any of accept.
type probeKeys struct {
	use    []byte
	accept [][]byte
}

// verify reports whether mac signs signed under one of the keys.
func (k *probeKeys) verify(signed, mac []byte) error {
	err := verifyProbe(k.use, signed, mac)
	for _, a := range k.accept {
		if err == nil {
			break
		}
		err = verifyProbe(a, signed, mac)
	}
	return err
}

// SetKeys follows a rotation of the shared key: probes are signed with
// use from now on and accepted under use or any of accept, so that the
// gateways, which get the new key each on its own schedule, keep seeing
// each other's probes through the rotation. Keys shorter than 16 bytes
// are refused and the keys stay as they were.
func (p *LoopProbe) SetKeys(use []byte, accept [][]byte) error {
	k := &probeKeys{use: append([]byte(nil), use...)}
	for _, a := range append([][]byte{use}, accept...) {
		if len(a) < minProbeKey {
			return fmt.Errorf("loop probe: key: %d bytes, need at least %d", len(a), minProbeKey)
		}
		if !bytes.Equal(a, use) {
			k.accept = append(k.accept, append([]byte(nil), a...))
		}
	}
	p.keys.Store(k)
	return nil
}

// NewLoopProbe returns a LoopProbe working in the caller's namespace.
func NewLoopProbe(opts LoopProbeOptions) (*LoopProbe, error) { return newLoopProbe(nil, opts) }

// NewLoopProbeIn is NewLoopProbe in the network namespace ns, which the
// caller keeps open until Close.
func NewLoopProbeIn(ns netns.NsHandle, opts LoopProbeOptions) (*LoopProbe, error) {
	return newLoopProbe(&ns, opts)
}

func newLoopProbe(ns *netns.NsHandle, opts LoopProbeOptions) (*LoopProbe, error) {
	var errs []error
	if opts.Self == "" || len(opts.Self) > maxSenderName {
		errs = append(errs, fmt.Errorf("self %q: must be 1-%d bytes", opts.Self, maxSenderName))
	}
	if len(opts.Key) < minProbeKey {
		errs = append(errs, fmt.Errorf("key: %d bytes, need at least %d", len(opts.Key), minProbeKey))
	}
	if opts.Interval < 0 {
		errs = append(errs, fmt.Errorf("interval %s: must be positive (or 0 for 50ms)", opts.Interval))
	}
	if opts.MaxAge < 0 {
		errs = append(errs, fmt.Errorf("maxAge %s: must be positive (or 0 for 2s)", opts.MaxAge))
	}
	if opts.OnDetect == nil {
		errs = append(errs, errors.New("onDetect: required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("loop probe: %w", err)
	}
	if opts.Interval == 0 {
		opts.Interval = 50 * time.Millisecond
	}
	if opts.MaxAge == 0 {
		opts.MaxAge = 2 * time.Second
	}
	opts.Key = append([]byte(nil), opts.Key...)
	log := opts.Log
	if log == nil {
		log = zap.NewNop()
	}
	var h *netlink.Handle
	var err error
	if ns != nil {
		h, err = netlink.NewHandleAt(*ns, unix.NETLINK_ROUTE)
	} else {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	if err != nil {
		return nil, fmt.Errorf("loop probe: netlink handle: %w", err)
	}
	p := &LoopProbe{opts: opts, log: log.Named("loopprobe"), ns: ns, h: h, segs: map[uint32]*probedSeg{},
		events: make(chan Detection, 64)}
	p.keys.Store(&probeKeys{use: opts.Key})
	p.dispatched.Add(1)
	go func() {
		defer p.dispatched.Done()
		for d := range p.events {
			p.opts.OnDetect(d)
		}
	}()
	return p, nil
}

// Stats returns the counters.
func (p *LoopProbe) Stats() LoopProbeStats {
	return LoopProbeStats{Sent: p.sent.Load(), SendErrors: p.sendErrors.Load(), Received: p.received.Load(), Invalid: p.invalid.Load(),
		Replayed: p.replayed.Load(), Reflected: p.reflected.Load(), Detections: p.detections.Load()}
}

// Set makes the probed segments equal to segs (the complete set):
// listeners and senders start and stop as needed; unchanged segments keep
// running. A segment that cannot be set up (a sending segment's port or
// device missing) is reported in the joined error and retried by the next
// Set; the other segments are still applied; an entry refused as invalid
// leaves that segment as it runs. Call Set on every resync: a segment
// whose port was deleted and recreated is reopened then.
func (p *LoopProbe) Set(segs []ProbedSegment) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("loop probe: closed")
	}
	want := map[uint32]ProbedSegment{}
	refused := map[uint32]bool{} // bad entries leave what runs alone
	var errs []error
	for _, s := range segs {
		s = s.withDefaults()
		if s.VNI < 1 || s.VNI > 1<<24-1 {
			errs = append(errs, fmt.Errorf("loop probe: vni %d: must be 1-16777215", s.VNI))
			continue
		}
		if _, dup := want[s.VNI]; dup {
			errs = append(errs, fmt.Errorf("loop probe: vni %d: listed twice", s.VNI))
			continue
		}
		if s.Sending && s.VLANPort == "" {
			errs = append(errs, fmt.Errorf("loop probe: vni %d: vlanPort: required when sending", s.VNI))
			refused[s.VNI] = true
			continue
		}
		want[s.VNI] = s
	}
	for vni, r := range p.segs {
		if refused[vni] {
			continue
		}
		w, ok := want[vni]
		// A standby's port may have appeared since: listen on it now.
		portAppeared := ok && r.listen == nil && w.VLANPort != "" && p.exists(w.VLANPort)
		if !ok || w != r.cfg || r.failed.Load() || portAppeared {
			r.stop()
			delete(p.segs, vni)
			p.log.Info("loop probe stopped", zap.String("event", "loopProbeStopped"), zap.Uint32("vni", vni))
		}
	}
	for vni, w := range want {
		if _, ok := p.segs[vni]; ok {
			continue
		}
		r, err := p.start(w)
		if err != nil {
			errs = append(errs, fmt.Errorf("loop probe: vni %d: %w", vni, err))
			continue
		}
		p.segs[vni] = r
		p.log.Info("loop probe started", zap.String("event", "loopProbeStarted"), zap.Uint32("vni", vni),
			zap.String("vlanPort", w.VLANPort), zap.Bool("sending", w.Sending), zap.Bool("listening", r.listen != nil))
	}
	return errors.Join(errs...)
}

// Close stops every segment's sender and listener, and returns once the
// last OnDetect call has returned.
func (p *LoopProbe) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	for vni, r := range p.segs {
		r.stop()
		delete(p.segs, vni)
	}
	p.hm.Lock()
	p.h.Close()
	p.hm.Unlock()
	close(p.events) // no listener is left to send
	p.mu.Unlock()
	p.dispatched.Wait()
	return nil
}

// probedSeg is one segment's running sockets and goroutines.
type probedSeg struct {
	cfg     ProbedSegment
	portIdx int
	// bridgeIdx caches the bridge's index for the receiver goroutine.
	bridgeIdx int
	listen    *packet.Conn // on the VLAN port; nil when it does not exist
	overlay   *packet.Conn // on the VXLAN device, send only; nil unless sending
	bridgeTx  *packet.Conn // on the bridge device, send only; nil unless sending
	src       net.HardwareAddr
	quit      chan struct{}
	wg        sync.WaitGroup
	// failed: a socket broke (the port went away): the next Set reopens.
	failed atomic.Bool
}

func (r *probedSeg) stop() {
	close(r.quit)
	if r.listen != nil {
		r.listen.Close() // unblocks the reader
	}
	r.wg.Wait()
	r.closeSenders()
}

func (r *probedSeg) closeSenders() {
	for _, c := range []*packet.Conn{r.overlay, r.bridgeTx} {
		if c != nil {
			c.Close()
		}
	}
}

// probeFilter passes only loop-probe frames. The socket listens to every
// EtherType because a bridge port's frames go to the bridge before
// protocol-specific sockets see them (see Port).
func probeFilter() []bpf.Instruction {
	return []bpf.Instruction{
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: LoopProbeEtherType, SkipFalse: 1},
		bpf.RetConstant{Val: 1600},
		bpf.RetConstant{Val: 0},
	}
}

// dropAll keeps a send-only socket's receive queue empty.
func dropAll() []bpf.Instruction { return []bpf.Instruction{bpf.RetConstant{Val: 0}} }

func (p *LoopProbe) start(cfg ProbedSegment) (*probedSeg, error) {
	r := &probedSeg{cfg: cfg, quit: make(chan struct{})}
	port, err := p.link(cfg.VLANPort)
	if err != nil && cfg.Sending {
		return nil, fmt.Errorf("vlanPort %s: %w", cfg.VLANPort, err)
	}
	var vx, br netlink.Link
	if cfg.Sending {
		if vx, err = p.link(cfg.VXLAN); err != nil {
			return nil, fmt.Errorf("vxlan %s: %w", cfg.VXLAN, err)
		}
		if br, err = p.link(cfg.Bridge); err != nil {
			return nil, fmt.Errorf("bridge %s: %w", cfg.Bridge, err)
		}
		r.src = br.Attrs().HardwareAddr
	}
	err = p.inNamespace(func() error {
		if port != nil {
			c, err := openRaw(port, probeFilter())
			if err != nil {
				return fmt.Errorf("vlanPort %s: %w", cfg.VLANPort, err)
			}
			if err := ignoreOutgoing(c); err != nil {
				c.Close()
				return fmt.Errorf("vlanPort %s: %w", cfg.VLANPort, err)
			}
			r.listen, r.portIdx = c, port.Attrs().Index
		}
		if vx != nil {
			c, err := openRaw(vx, dropAll())
			if err != nil {
				return fmt.Errorf("vxlan %s: %w", cfg.VXLAN, err)
			}
			r.overlay = c
		}
		if br != nil {
			c, err := openRaw(br, dropAll())
			if err != nil {
				return fmt.Errorf("bridge %s: %w", cfg.Bridge, err)
			}
			r.bridgeTx = c
		}
		return nil
	})
	if err != nil {
		if r.listen != nil {
			r.listen.Close()
		}
		r.closeSenders()
		return nil, err
	}
	if r.listen != nil {
		r.wg.Add(1)
		go p.receive(r)
	}
	if cfg.Sending {
		r.wg.Add(1)
		go p.send(r)
	}
	return r, nil
}

func (p *LoopProbe) sameIndex(r *probedSeg) bool {
	l, err := p.link(r.cfg.VLANPort)
	return err == nil && l.Attrs().Index == r.portIdx
}

func (p *LoopProbe) exists(name string) bool {
	_, err := p.link(name)
	return err == nil
}

func (p *LoopProbe) link(name string) (netlink.Link, error) {
	if name == "" {
		return nil, errors.New("no interface named")
	}
	p.hm.Lock()
	defer p.hm.Unlock()
	return p.h.LinkByName(name)
}

// bridged says whether the port is (still) a port of the segment's
// bridge: only then does a probe on it mean two bridges. A standby hears
// the active gateway's probes on its detached port all the time.
func (p *LoopProbe) bridged(r *probedSeg) (bool, error) {
	p.hm.Lock()
	defer p.hm.Unlock()
	port, err := p.h.LinkByIndex(r.portIdx)
	if err != nil {
		return false, err
	}
	master := port.Attrs().MasterIndex
	if master == 0 {
		return false, nil
	}
	// One netlink request on the hot path; the bridge is looked up again
	// only when the master differs (a recreated bridge has a new index).
	if master != r.bridgeIdx {
		br, err := p.h.LinkByName(r.cfg.Bridge)
		if err != nil {
			return false, nil // no bridge, no bridging
		}
		r.bridgeIdx = br.Attrs().Index
	}
	return master == r.bridgeIdx, nil
}

func openRaw(l netlink.Link, filter []bpf.Instruction) (*packet.Conn, error) {
	raw, err := bpf.Assemble(filter)
	if err != nil {
		return nil, fmt.Errorf("bpf: %w", err)
	}
	a := l.Attrs()
	ifi := &net.Interface{Index: a.Index, Name: a.Name, MTU: a.MTU, HardwareAddr: a.HardwareAddr}
	c, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, &packet.Config{Filter: raw})
	if err != nil {
		return nil, fmt.Errorf("raw socket: %w", err)
	}
	return c, nil
}

func ignoreOutgoing(c *packet.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("PACKET_IGNORE_OUTGOING (Linux 4.20+): %w", serr)
	}
	return nil
}

// inNamespace runs fn on a thread in p's namespace.
func (p *LoopProbe) inNamespace(fn func() error) error { return inNetns(p.ns, fn) }

// send probes each tick twice, marked by side. The VLAN-side probe goes
// out of the bridge device, so the bridge floods it out of the ports it
// really has: a gateway whose port is not enslaved (whatever its agent
// believes) puts no probe on the VLAN. The VXLAN-side probe goes straight
// out of the VXLAN device. Our own VXLAN-side probe back on our VLAN port
// crossed another bridge; our VLAN-side one coming back may only have
// been reflected by a host on the VLAN (a replay), which must not make us
// yield.
func (p *LoopProbe) send(r *probedSeg) {
	defer r.wg.Done()
	t := time.NewTicker(p.opts.Interval)
	defer t.Stop()
	// Sequence numbers start at the clock, so a sender restarted (a role
	// change restarts it) is still above what receivers saw last.
	seq := uint64(time.Now().UnixNano())
	var lastErrLog time.Time
	for {
		seq++
		for _, side := range []struct {
			c     *packet.Conn
			flags byte
		}{{r.bridgeTx, 0}, {r.overlay, flagOverlay}} {
			f, err := p.frame(r, side.flags, seq, time.Now())
			if err == nil {
				_, err = side.c.WriteTo(f, &packet.Addr{HardwareAddr: LoopProbeMAC()})
			}
			if err != nil {
				select {
				case <-r.quit:
					return
				default:
				}
				p.sendErrors.Add(1)
				// A device that is down (ENETDOWN) or busy (ENOBUFS)
				// comes back; one that is gone needs a new socket.
				gone := errors.Is(err, unix.ENXIO) || errors.Is(err, unix.ENODEV)
				if gone || time.Since(lastErrLog) > time.Second {
					lastErrLog = time.Now()
					p.log.Warn("loop probe send failed", zap.String("event", "loopProbeSendFailed"),
						zap.Uint32("vni", r.cfg.VNI), zap.Bool("deviceGone", gone), zap.Error(err))
				}
				if gone {
					r.failed.Store(true)
					return
				}
				continue
			}
			p.sent.Add(1)
		}
		select {
		case <-r.quit:
			return
		case <-t.C:
		}
	}
}

func (p *LoopProbe) frame(r *probedSeg, flags byte, seq uint64, at time.Time) ([]byte, error) {
	if r.cfg.Holding {
		flags |= flagHolding
	}
	return encodeProbe(p.keys.Load().use, r.src, probe{Flags: flags, VNI: r.cfg.VNI, Seq: seq, SentAt: at, Epoch: r.cfg.Epoch, From: p.opts.Self})
}

func (p *LoopProbe) receive(r *probedSeg) {
	defer r.wg.Done()
	guard := replayGuard{}
	lastLog := map[string]time.Time{}
	buf := make([]byte, 2048)
	for {
		n, _, err := r.listen.ReadFrom(buf)
		if err != nil {
			select {
			case <-r.quit:
				return
			default:
			}
			// A port set down reports ENETDOWN once and resumes when up;
			// a deleted one needs a new socket (the next Set).
			if p.sameIndex(r) {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			r.failed.Store(true)
			p.log.Error("loop probe listener failed", zap.String("event", "loopProbeFailed"),
				zap.Uint32("vni", r.cfg.VNI), zap.String("vlanPort", r.cfg.VLANPort), zap.Error(err))
			return
		}
		now := time.Now()
		pr, signed, mac, err := parseProbe(buf[:n])
		if err == nil && guard.replay(pr, now, p.opts.MaxAge) {
			p.replayed.Add(1)
			continue
		}
		if err == nil {
			err = p.keys.Load().verify(signed, mac)
		}
		if err != nil {
			p.invalid.Add(1)
			if key := "invalid"; now.Sub(lastLog[key]) > time.Second {
				lastLog[key] = now
				p.log.Warn("invalid loop probe ignored", zap.String("event", "loopProbeInvalid"),
					zap.Uint32("vni", r.cfg.VNI), zap.String("vlanPort", r.cfg.VLANPort), zap.Error(err))
			}
			continue
		}
		v := guard.classify(pr, p.opts.Self, r.cfg.VNI, now, p.opts.MaxAge)
		if v == verdictReplay {
			p.replayed.Add(1)
			continue
		}
		p.received.Add(1)
		switch v {
		case verdictReflected:
			p.reflected.Add(1)
			continue
		case verdictForeignVNI:
			if now.Sub(lastLog["vni"]) > time.Second {
				lastLog["vni"] = now
				p.log.Warn("loop probe of another segment received", zap.String("event", "loopProbeForeignVNI"),
					zap.Uint32("vni", r.cfg.VNI), zap.Uint32("probeVNI", pr.VNI), zap.String("from", pr.From))
			}
			continue
		}
		own := pr.From == p.opts.Self
		bridged, err := p.bridged(r)
		if err != nil || !bridged {
			continue
		}
		d := Detection{VNI: r.cfg.VNI, Port: r.cfg.VLANPort, From: pr.From, Own: own, At: now, SentAt: pr.SentAt,
			FromHolding: pr.Flags&flagHolding != 0, FromEpoch: pr.Epoch}
		p.detections.Add(1)
		if k := "detect/" + pr.From; now.Sub(lastLog[k]) > time.Second {
			lastLog[k] = now
			p.log.Warn("second bridge detected", zap.String("event", "loopDetected"),
				zap.Uint32("vni", d.VNI), zap.String("vlanPort", d.Port), zap.String("from", d.From), zap.Bool("own", d.Own))
		}
		select {
		case p.events <- d:
		case <-r.quit:
			return
		}
		// In a storm the socket never runs dry, so this goroutine would
		// not park and the dispatcher would wait for preemption (tens of
		// ms): hand over now.
		runtime.Gosched()
	}
}

type probeVerdict int

const (
	// verdictReplay: too old, from the future, or already seen.
	verdictReplay probeVerdict = iota
	// verdictReflected: our own VLAN-side probe sent back by a host on
	// the VLAN; it never crossed a bridge.
	verdictReflected
	// verdictForeignVNI: another segment's probe: two segments are
	// cross-connected somewhere, not a second bridge of this one.
	verdictForeignVNI
	// verdictSecondBridge: proves a second bridge if our port is bridged.
	verdictSecondBridge
)

// replayGuard remembers the last sequence number per sender, segment and
// side: a captured probe sent again later is refused. Only authentic
// probes reach it, so only gateways add entries.
type replayGuard map[guardKey]uint64

type guardKey struct {
	from string
	vni  uint32
	side byte
}

func keyOf(pr probe) guardKey { return guardKey{pr.From, pr.VNI, pr.Flags & flagOverlay} }

// replay says whether pr is stale or already seen; it changes nothing, so
// it may run before the HMAC is checked.
func (g replayGuard) replay(pr probe, now time.Time, maxAge time.Duration) bool {
	age := now.Sub(pr.SentAt)
	return age > maxAge || age < -maxAge || pr.Seq <= g[keyOf(pr)]
}

// classify judges an authentic probe and remembers it.
func (g replayGuard) classify(pr probe, self string, vni uint32, now time.Time, maxAge time.Duration) probeVerdict {
	if g.replay(pr, now, maxAge) {
		return verdictReplay
	}
	g[keyOf(pr)] = pr.Seq
	switch {
	case pr.From == self && pr.Flags&flagOverlay == 0:
		return verdictReflected
	case pr.VNI != vni:
		return verdictForeignVNI
	}
	return verdictSecondBridge
}

// probe is a decoded probe payload.
type probe struct {
	Flags  byte
	VNI    uint32
	Seq    uint64
	SentAt time.Time
	Epoch  uint64
	From   string
}

func probeMAC(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)[:probeMACLen]
}

func encodeProbe(key []byte, src net.HardwareAddr, pr probe) ([]byte, error) {
	if len(pr.From) == 0 || len(pr.From) > maxSenderName {
		return nil, fmt.Errorf("sender %q: must be 1-%d bytes", pr.From, maxSenderName)
	}
	b := make([]byte, probeHeader, probeHeader+len(pr.From)+probeMACLen)
	copy(b, probeMagic)
	b[4] = probeVersion
	b[5] = pr.Flags
	binary.BigEndian.PutUint32(b[6:], pr.VNI)
	binary.BigEndian.PutUint64(b[10:], pr.Seq)
	binary.BigEndian.PutUint64(b[18:], uint64(pr.SentAt.UnixNano()))
	binary.BigEndian.PutUint64(b[26:], pr.Epoch)
	b[34] = byte(len(pr.From))
	b = append(b, pr.From...)
	b = append(b, probeMAC(key, b)...)
	buf := gopacket.NewSerializeBuffer()
	eth := &layers.Ethernet{SrcMAC: src, DstMAC: LoopProbeMAC(), EthernetType: LoopProbeEtherType}
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{}, eth, gopacket.Payload(b)); err != nil {
		return nil, fmt.Errorf("serialize probe: %w", err)
	}
	return buf.Bytes(), nil
}

func decodeProbe(key, frame []byte) (probe, error) {
	pr, signed, mac, err := parseProbe(frame)
	if err != nil {
		return probe{}, err
	}
	if err := verifyProbe(key, signed, mac); err != nil {
		return probe{}, err
	}
	return pr, nil
}

// parseProbe reads a probe without checking its HMAC: in a storm the
// listener sees each probe again and again, and refusing what the replay
// guard already saw is cheaper than hashing it.
func parseProbe(frame []byte) (pr probe, signed, mac []byte, err error) {
	var eth layers.Ethernet
	if err := eth.DecodeFromBytes(frame, gopacket.NilDecodeFeedback); err != nil {
		return probe{}, nil, nil, fmt.Errorf("ethernet: %w", err)
	}
	if eth.EthernetType != LoopProbeEtherType {
		return probe{}, nil, nil, fmt.Errorf("ethertype %#04x: not a loop probe", uint16(eth.EthernetType))
	}
	b := eth.Payload
	if len(b) < probeHeader || string(b[:4]) != probeMagic {
		return probe{}, nil, nil, errors.New("no loop probe magic")
	}
	if b[4] != probeVersion {
		return probe{}, nil, nil, fmt.Errorf("version %d: want %d", b[4], probeVersion)
	}
	n := int(b[34])
	end := probeHeader + n
	if n == 0 || len(b) < end+probeMACLen {
		return probe{}, nil, nil, fmt.Errorf("sender length %d: frame too short (%d bytes)", n, len(b))
	}
	return probe{
		Flags:  b[5],
		VNI:    binary.BigEndian.Uint32(b[6:]),
		Seq:    binary.BigEndian.Uint64(b[10:]),
		SentAt: time.Unix(0, int64(binary.BigEndian.Uint64(b[18:]))),
		Epoch:  binary.BigEndian.Uint64(b[26:]),
		From:   string(b[probeHeader:end]),
	}, b[:end], b[end : end+probeMACLen], nil
}

func verifyProbe(key, signed, mac []byte) error {
	if !hmac.Equal(mac, probeMAC(key, signed)) {
		return errors.New("bad HMAC")
	}
	return nil
}
