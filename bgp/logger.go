package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// logFields are the attributes of one GoBGP log record, by GoBGP's key
// ("Topic", "Key", "Reason").
type logFields map[string]any

// zapHandler adapts zap to the slog logger GoBGP v4 takes. Levels come from
// the zap core (GoBGP builds debug records only when Enabled says so, which
// matters with 10,000 paths). onPeer sees the peer-topic messages Status
// uses to say why a session failed, whatever the zap level.
type zapHandler struct {
	z      *zap.Logger
	onPeer func(level zapcore.Level, addr netip.Addr, msg string, fields logFields)
	attrs  []slog.Attr // from WithAttrs (GoBGP's peer logger carries Topic and Key)
	group  string
	peer   bool // attrs say Topic=Peer
}

var _ slog.Handler = (*zapHandler)(nil)

func newZapHandler(z *zap.Logger, onPeer func(zapcore.Level, netip.Addr, string, logFields)) *zapHandler {
	return &zapHandler{z: z, onPeer: onPeer}
}

func zapLevel(l slog.Level) zapcore.Level {
	switch {
	case l >= slog.LevelError:
		return zapcore.ErrorLevel
	case l >= slog.LevelWarn:
		return zapcore.WarnLevel
	case l >= slog.LevelInfo:
		return zapcore.InfoLevel
	}
	return zapcore.DebugLevel
}

func (h *zapHandler) Enabled(_ context.Context, l slog.Level) bool {
	return h.z.Core().Enabled(zapLevel(l)) || (h.peer && h.onPeer != nil)
}

// hooked reports whether onPeer wants msg: cheap, checked before any
// record is converted (GoBGP logs every received update at debug).
func hooked(level zapcore.Level, msg string) bool {
	return level >= zapcore.WarnLevel || msg == "Peer Down" || msg == "failed to connect"
}

func (h *zapHandler) Handle(_ context.Context, r slog.Record) error {
	level := zapLevel(r.Level)
	ce := h.z.Check(level, r.Message)
	wantHook := h.onPeer != nil && hooked(level, r.Message)
	if ce == nil && !wantHook {
		return nil
	}
	fields := make(logFields, len(h.attrs)+r.NumAttrs())
	for _, a := range h.attrs {
		fields[h.group+a.Key] = a.Value.Resolve().Any()
	}
	r.Attrs(func(a slog.Attr) bool {
		fields[h.group+a.Key] = a.Value.Resolve().Any()
		return true
	})
	if wantHook && fields["Topic"] == "Peer" {
		if a, err := netip.ParseAddr(fmt.Sprint(fields["Key"])); err == nil {
			h.onPeer(level, a, r.Message, fields)
		}
	}
	if ce == nil {
		return nil
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	zf := make([]zap.Field, 0, len(keys))
	for _, k := range keys {
		// GoBGP keys are CamelCase ("Topic", "Key"); lower-case the first
		// letter to match our key style.
		name := k
		if name != "" {
			name = strings.ToLower(name[:1]) + name[1:]
		}
		zf = append(zf, zap.Any(name, fields[k]))
	}
	ce.Write(zf...)
	return nil
}

func (h *zapHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), attrs...)
	for _, a := range attrs {
		if a.Key == "Topic" && a.Value.String() == "Peer" {
			c.peer = true
		}
	}
	return &c
}

func (h *zapHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.group = h.group + name + "."
	return &c
}
