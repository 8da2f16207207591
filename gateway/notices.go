package gateway

import (
	"sort"

	"go.uber.org/zap"
)

// logAttachments logs a segment attached only once its VLAN is bridged for
// real: attached by the election AND programmed by the data plane (a
// segment the kernel refused is reported by segmentRefused instead).
func (a *Agent) logAttachments(p *pass) {
	now := map[SegmentKey]bool{}
	for k := range p.attached {
		if _, bad := p.segErr[k]; !bad {
			now[k] = true
		}
	}
	for k := range a.bridged {
		if !now[k] {
			a.log.Info("segment detached", zap.String("event", "segmentDetached"), zap.String("segment", k.String()))
		}
	}
	for k := range now {
		if !a.bridged[k] {
			a.log.Info("segment attached", zap.String("event", "segmentAttached"), zap.String("segment", k.String()))
		}
	}
	a.bridged = now
}

// notices logs each problem of the report once, when it appears (and once
// when it clears), instead of only counting it: a refused segment, a
// refused endpoint IP with the rule it broke, an IP not advertised.
type notices struct {
	// seen maps each problem's key to the event logged when it clears.
	seen map[string]zap.Field
}

// notice is one problem, keyed by what it is about and what it says.
type notice struct {
	key, msg string
	// info: an expected state worth a line, not a warning.
	info bool
	// fields start with the event; cleared is the event of its end.
	fields  []zap.Field
	cleared zap.Field
}

func reportNotices(r Report) []notice {
	var out []notice
	for _, s := range r.Segments {
		if s.Programmed {
			continue
		}
		out = append(out, notice{key: "segment " + s.Key.String() + ": " + s.Error, msg: "segment refused",
			cleared: zap.String("event", "segmentRecovered"),
			fields:  []zap.Field{zap.String("event", "segmentRefused"), zap.String("segment", s.Key.String()), zap.String("error", s.Error)}})
	}
	for _, f := range r.Refused {
		ep := f.Namespace + "/" + f.Endpoint
		out = append(out, notice{key: "endpoint " + ep + " " + f.IP.String() + ": " + f.Reason, msg: "endpoint IP refused",
			cleared: zap.String("event", "endpointRefusalCleared"),
			fields:  []zap.Field{zap.String("event", "endpointRefused"), zap.String("endpoint", ep), zap.String("ip", f.IP.String()), zap.String("rule", f.Reason), zap.String("message", f.Message)}})
	}
	for _, e := range r.Endpoints {
		if e.Message == "" {
			continue
		}
		ep := e.Namespace + "/" + e.Name
		out = append(out, notice{key: "endpoint " + ep + ": " + e.Message, msg: "endpoint not (fully) advertised", info: true,
			cleared: zap.String("event", "endpointNoticeCleared"),
			fields:  []zap.Field{zap.String("event", "endpointNotAdvertised"), zap.String("endpoint", ep), zap.String("message", e.Message)}})
	}
	return out
}

// log writes the notices that are new since the last report (warnings),
// and the clearing of those that are gone.
func (n *notices) log(log *zap.Logger, r Report) {
	now := map[string]zap.Field{}
	for _, x := range reportNotices(r) {
		now[x.key] = x.cleared
		if _, seen := n.seen[x.key]; seen {
			continue
		}
		if x.info {
			log.Info(x.msg, x.fields...)
		} else {
			log.Warn(x.msg, x.fields...)
		}
	}
	var gone []string
	for k := range n.seen {
		if _, still := now[k]; !still {
			gone = append(gone, k)
		}
	}
	sort.Strings(gone)
	for _, k := range gone {
		log.Info("problem cleared", n.seen[k], zap.String("was", k))
	}
	n.seen = now
}
