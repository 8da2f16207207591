package gateway

import (
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/netbridge-io/netbridge/vlan"
)

// The loop probe in the agent (docs/ha.md, rule 8): every bridging
// gateway probes its segments (vlan.LoopProbe); a probe read on a bridged
// VLAN port proves a second bridge. Who yields is loopYield (pure); the
// yielding gateway cuts at once — kernel fence first, then it takes the
// port out of the bridge — and keeps the segment detached for a hold-down.

// LoopProber is what the agent needs of vlan.LoopProbe.
type LoopProber interface {
	Set(segs []vlan.ProbedSegment) error
}

// PortReleaser takes a port out of a segment bridge, whoever put it there
// (vlan.DataPlane.ReleasePort).
type PortReleaser interface {
	ReleasePort(bridge, port string) (bool, error)
}

// LoopInbox carries the loop probe's detections to the agent. It exists
// before the agent, like Trigger, so the probe can be built first.
type LoopInbox struct{ ch chan vlan.Detection }

// NewLoopInbox returns an inbox for a burst of detections.
func NewLoopInbox() *LoopInbox { return &LoopInbox{ch: make(chan vlan.Detection, 256)} }

// Deliver is vlan.LoopProbeOptions.OnDetect. It never blocks: when the
// inbox is full the agent is busy cutting, and the next probe (one
// interval later) is detected again if the loop is still there.
func (i *LoopInbox) Deliver(d vlan.Detection) {
	select {
	case i.ch <- d:
	default:
	}
}

// LoopOptions tune the agent's reaction to a second bridge.
type LoopOptions struct {
	// HoldDown keeps a yielded segment detached (and its port fenced) this
	// long after the last detection (default 10s).
	HoldDown time.Duration
	// ReportFor keeps a detection in the BridgeGateway's LoopDetected
	// condition this long after the last probe of its episode (default 10m).
	ReportFor time.Duration
}

func (o LoopOptions) withDefaults() LoopOptions {
	if o.HoldDown <= 0 {
		o.HoldDown = 10 * time.Second
	}
	if o.ReportFor <= 0 {
		o.ReportFor = 10 * time.Minute
	}
	return o
}

// loopEpisodeGap: detections of one segment closer than this are one
// episode (one event, one count); probes arrive every 50 ms while it lasts.
const loopEpisodeGap = time.Second

// loopParty is one side of a second bridge as the yield rule sees it.
type loopParty struct {
	Name string
	// Attached: the agent bridges the segment by its own decision (a probe
	// from another gateway implies it: only bridging agents send).
	Attached bool
	// Holding: the API server's last answer says it holds the Lease.
	Holding bool
	Epoch   uint64
}

// loopYield is the yield rule of docs/ha.md: a port bridged behind the
// agent's back always yields; otherwise the side that does not hold the
// Lease, then the lower epoch, then the larger name (as for equal epochs
// in the peer claims). Both ends compute it from the same two facts (the
// probe carries the sender's), so exactly one of two agents yields. Our
// own probe back through an unknown bridge: we keep bridging, the other
// bridge is the one to cut (its agent, if any, hears our probe too).
func loopYield(self, other loopParty, own bool) (yield bool, reason string) {
	switch {
	case !self.Attached:
		return true, "bridgedBehindAgent"
	case own:
		return false, "ownProbeReturned"
	case self.Holding != other.Holding:
		if self.Holding {
			return false, "holdsLease"
		}
		return true, "otherHoldsLease"
	case self.Epoch != other.Epoch:
		if self.Epoch < other.Epoch {
			return true, "lowerEpoch"
		}
		return false, "higherEpoch"
	case self.Name > other.Name:
		return true, "largerName"
	default:
		return false, "smallerName"
	}
}

// loopSeg is what a detection on one segment needs from the last pass.
type loopSeg struct {
	key          SegmentKey
	bridge, port string
	attached     bool
	// attachedAt: when this gateway's pass attached the segment; an
	// earlier probe may be the previous holder's last, sent before its
	// detach (a handover, not a loop).
	attachedAt time.Time
	holding    bool
	epoch      uint64
}

// loopView is one pass's facts about a gateway segment.
type loopView struct {
	Attached bool
	Holding  bool
	Epoch    uint64
}

// probedSegments are the loop probe's segments: every programmed gateway
// segment that has a VLAN side, sending while this gateway bridges it
// (its port is fenced: attached, programmed, not Completed).
func probedSegments(d Desired, ports map[SegmentKey]fencedPort, segErr map[SegmentKey]string, views map[SegmentKey]loopView) []vlan.ProbedSegment {
	var out []vlan.ProbedSegment
	for _, s := range d.Segments {
		if _, bad := segErr[s.Key]; bad || s.Phase == PhaseCompleted || vlanSide(s) == "" {
			continue
		}
		_, sending := ports[s.Key]
		v := views[s.Key]
		ps := vlan.ProbedSegment{VNI: s.VNI, VLANPort: vlanSide(s), Sending: sending}
		if sending {
			ps.Holding, ps.Epoch = v.Holding, v.Epoch
		}
		out = append(out, ps)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VNI < out[j].VNI })
	return out
}

// LoopReport is one segment's latest loop episode.
type LoopReport struct {
	Segment SegmentKey
	Port    string
	// From is the gateway whose probe proved the second bridge (ourselves
	// when Own).
	From string
	Own  bool
	// Yielded: this gateway cut its port; otherwise the other bridge must.
	Yielded bool
	Reason  string
	// At is the episode's first detection; DetectLatency how long its
	// probe took from the sender; CutIn how long from that detection
	// until the fence was written (yielded only).
	At            time.Time
	DetectLatency time.Duration
	CutIn         time.Duration
	// lastSeen is the episode's latest detection.
	lastSeen time.Time
}

// loopGuard is the agent's loop state: the probed segments of the last
// pass, the cut ports and held segments, the episodes to report.
type loopGuard struct {
	self    string
	opt     LoopOptions
	probe   LoopProber
	release PortReleaser
	inbox   *LoopInbox
	log     *zap.Logger

	mu    sync.Mutex
	segs  map[uint32]loopSeg
	since map[SegmentKey]time.Time // attached since
	cuts  map[string]loopCut       // port → fenced (never alive)
	holds map[SegmentKey]time.Time // segment → not attached until
	// holdLogged: the hold-down of the segment was logged once.
	holdLogged map[SegmentKey]bool
	episodes   map[SegmentKey]LoopReport
	setErr     string
}

func newLoopGuard(self string, opt LoopOptions, probe LoopProber, release PortReleaser, inbox *LoopInbox, log *zap.Logger) *loopGuard {
	return &loopGuard{self: self, opt: opt.withDefaults(), probe: probe, release: release, inbox: inbox, log: log,
		segs: map[uint32]loopSeg{}, since: map[SegmentKey]time.Time{}, cuts: map[string]loopCut{},
		holds: map[SegmentKey]time.Time{}, holdLogged: map[SegmentKey]bool{}, episodes: map[SegmentKey]LoopReport{}}
}

// held are the segments in their hold-down now; the value says whether
// the hold-down is still to be logged.
func (g *loopGuard) held(now time.Time) map[SegmentKey]bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[SegmentKey]bool{}
	for k, until := range g.holds {
		if now.Before(until) {
			out[k] = !g.holdLogged[k]
		} else {
			delete(g.holds, k)
			delete(g.holdLogged, k)
		}
	}
	return out
}

// attaching lifts the rogue cut of a port the agent now bridges itself.
func (g *loopGuard) attaching(port string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c, ok := g.cuts[port]; ok && c.rogue {
		delete(g.cuts, port)
	}
}

func (g *loopGuard) holdWasLogged(k SegmentKey) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.holdLogged[k] = true
}

// applyCuts adds the cut ports to the fence's guarded ports and takes
// them out of the alive ones: the kernel drops their frames at once.
func (g *loopGuard) applyCuts(guarded []string, alive map[string]time.Duration, now time.Time) ([]string, map[string]time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return withCuts(guarded, alive, g.cuts, now)
}

// loopCut is a port the fence keeps dead.
type loopCut struct {
	until time.Time
	// rogue: the port was bridged behind the agent's back; the cut ends
	// as soon as the agent attaches the segment itself (a takeover must
	// not wait for the hold-down).
	rogue bool
}

// withCuts is applyCuts' pure part; it prunes expired cuts from cuts.
func withCuts(guarded []string, alive map[string]time.Duration, cuts map[string]loopCut, now time.Time) ([]string, map[string]time.Duration) {
	if len(cuts) == 0 {
		return guarded, alive
	}
	out := append([]string(nil), guarded...)
	have := map[string]bool{}
	for _, p := range guarded {
		have[p] = true
	}
	al := map[string]time.Duration{}
	for p, d := range alive {
		al[p] = d
	}
	for p, c := range cuts {
		if !now.Before(c.until) {
			delete(cuts, p)
			continue
		}
		delete(al, p)
		if !have[p] {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out, al
}

// update records the pass's segments and gives the loop probe its set.
func (g *loopGuard) update(d Desired, ports map[SegmentKey]fencedPort, segErr map[SegmentKey]string, views map[SegmentKey]loopView) {
	now := time.Now()
	segs := map[uint32]loopSeg{}
	g.mu.Lock()
	for _, s := range d.Segments {
		v := views[s.Key]
		_, bridging := ports[s.Key]
		if !bridging {
			delete(g.since, s.Key)
		} else if _, ok := g.since[s.Key]; !ok {
			g.since[s.Key] = now
		}
		segs[s.VNI] = loopSeg{key: s.Key, bridge: vlan.BridgeName(s.VNI), port: vlanSide(s), attached: bridging,
			attachedAt: g.since[s.Key], holding: v.Holding, epoch: v.Epoch}
	}
	g.segs = segs
	g.mu.Unlock()
	err := g.probe.Set(probedSegments(d, ports, segErr, views))
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg != g.setErr && err != nil {
		g.log.Warn("loop probe: some segments are not probed", zap.String("event", "loopProbeSetFailed"), zap.Error(err))
	}
	g.setErr = msg
}

// loopAction is what a detection asks of the agent.
type loopAction struct {
	seg     loopSeg
	yield   bool
	reason  string
	episode bool // the first detection of an episode: log, count, event
}

// judge decides on one detection and records it; ok is false for a
// detection that proves nothing (an unknown segment, a handover's probe).
func (g *loopGuard) judge(d vlan.Detection, now time.Time) (loopAction, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	s, ok := g.segs[d.VNI]
	if !ok || s.port != d.Port {
		return loopAction{}, false
	}
	if s.attached && !d.Own && d.SentAt.Before(s.attachedAt) {
		return loopAction{}, false
	}
	yield, reason := loopYield(loopParty{Name: g.self, Attached: s.attached, Holding: s.holding, Epoch: s.epoch},
		loopParty{Name: d.From, Attached: true, Holding: d.FromHolding, Epoch: d.FromEpoch}, d.Own)
	a := loopAction{seg: s, yield: yield, reason: reason}
	ep, seen := g.episodes[s.key]
	if !seen || now.Sub(ep.lastSeen) > loopEpisodeGap || ep.Yielded != yield || ep.From != d.From {
		a.episode = true
		ep = LoopReport{Segment: s.key, Port: s.port, From: d.From, Own: d.Own, Yielded: yield, Reason: reason,
			At: d.At, DetectLatency: d.At.Sub(d.SentAt)}
	}
	ep.lastSeen = now
	g.episodes[s.key] = ep
	if yield {
		g.cuts[s.port] = loopCut{until: now.Add(g.opt.HoldDown), rogue: !s.attached}
		if s.attached {
			// A port bridged behind our back holds nothing: the agent
			// may still attach the segment itself (a takeover).
			g.holds[s.key] = now.Add(g.opt.HoldDown)
		}
	}
	return a, true
}

// cutDone records how long the episode's first cut took.
func (g *loopGuard) cutDone(k SegmentKey, in time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if ep, ok := g.episodes[k]; ok && ep.CutIn == 0 {
		ep.CutIn = in
		g.episodes[k] = ep
	}
}

// reports are the episodes still to report, by segment.
func (g *loopGuard) reports(now time.Time) []LoopReport {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []LoopReport
	for k, ep := range g.episodes {
		if now.Sub(ep.lastSeen) > g.opt.ReportFor {
			delete(g.episodes, k)
			continue
		}
		out = append(out, ep)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Segment.String() < out[j].Segment.String() })
	return out
}

// watchLoops handles the loop probe's detections until ctx ends.
func (a *Agent) watchLoops(done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case d := <-a.loop.inbox.ch:
			a.onLoop(d)
		}
	}
}

// onLoop acts on one detection: a yield cuts the port in the kernel fence
// first (the kernel stops forwarding within one netlink write, even while
// a detach would wait), then takes it out of the bridge, then asks for a
// pass (which keeps the segment detached for the hold-down and reports).
func (a *Agent) onLoop(d vlan.Detection) {
	now := time.Now()
	act, ok := a.loop.judge(d, now)
	if !ok {
		return
	}
	seg := act.seg.key.String()
	if act.episode {
		a.deps.Metrics.LoopDetected(seg)
		a.log.Warn("second bridge on a segment", zap.String("event", "loopDetected"), zap.String("segment", seg),
			zap.String("vlanPort", act.seg.port), zap.String("from", d.From), zap.Bool("own", d.Own),
			zap.Bool("yield", act.yield), zap.String("reason", act.reason),
			zap.Bool("otherHolding", d.FromHolding), zap.Uint64("otherEpoch", d.FromEpoch),
			zap.Bool("holding", act.seg.holding), zap.Uint64("epoch", act.seg.epoch),
			zap.Duration("probeLatency", d.At.Sub(d.SentAt)))
	}
	if !act.yield {
		if act.episode {
			a.Trigger() // report it; the probes of the episode change nothing more
		}
		return
	}
	fenced := a.deps.Fence != nil && a.deps.Election != nil
	if fenced {
		a.keepAlive()
	}
	fencedAt := time.Now()
	cutIn := fencedAt.Sub(d.At)
	a.loop.cutDone(act.seg.key, cutIn)
	released, err := false, error(nil)
	if a.loop.release != nil {
		released, err = a.loop.release.ReleasePort(act.seg.bridge, act.seg.port)
	}
	if err != nil {
		a.log.Error("loop cut: could not take the port out of the bridge (the fence still drops its frames)",
			zap.String("event", "loopCutFailed"), zap.String("segment", seg), zap.String("vlanPort", act.seg.port), zap.Error(err))
	}
	if act.episode || released {
		a.log.Warn("loop cut: this gateway yielded the segment", zap.String("event", "loopCut"), zap.String("segment", seg),
			zap.String("vlanPort", act.seg.port), zap.Bool("fenced", fenced), zap.Bool("released", released),
			zap.Time("detectedAt", d.At), zap.Time("fencedAt", fencedAt),
			zap.Duration("fencedAfter", cutIn), zap.Duration("releasedAfter", time.Since(d.At)),
			zap.Duration("holdDown", a.loop.opt.HoldDown))
	}
	a.Trigger()
}

// loopViews are the pass's Lease facts per gateway segment, for the
// probes this gateway sends and for its own side of the yield rule.
func (a *Agent) loopViews(p *pass) map[SegmentKey]loopView {
	out := map[SegmentKey]loopView{}
	lc, _ := a.deps.Election.(LeaseControl)
	for _, s := range p.d.Segments {
		v := loopView{Attached: p.attached[s.Key]}
		switch {
		case p.ha[s.Key].Attach:
			v.Holding, v.Epoch = true, p.ha[s.Key].Seg.epoch
		case lc != nil:
			l := lc.Lease(s.Key)
			v.Holding, v.Epoch = l.Held && v.Attached, l.Epoch
		case a.deps.Election != nil:
			v.Holding = a.deps.Election.Leading(s.Key) && v.Attached
		}
		out[s.Key] = v
	}
	return out
}

// holdLoops keeps the segments in their hold-down detached: an HA segment
// goes back to Standby and claims nothing (it claims again when the
// hold-down is over and the attach condition holds afresh).
func (a *Agent) holdLoops(p *pass) {
	if a.loop == nil {
		return
	}
	held := a.loop.held(time.Now())
	for _, s := range p.d.Segments {
		if _, h := held[s.Key]; p.attached[s.Key] && !h {
			a.loop.attaching(vlanSide(s))
		}
	}
	for k, log := range held {
		if a.ha != nil {
			a.ha.loopYield(p, k)
		}
		if !p.attached[k] {
			continue
		}
		delete(p.attached, k)
		if log {
			a.loop.holdWasLogged(k)
			a.log.Info("segment held detached after a loop", zap.String("event", "loopHoldDown"), zap.String("segment", k.String()),
				zap.Duration("holdDown", a.loop.opt.HoldDown))
		}
	}
}
