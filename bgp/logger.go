package bgp

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// zapLogger adapts zap to GoBGP's logger. GoBGP's level is derived from
// the zap core (GoBGP skips building debug fields unless GetLevel says
// debug, which matters with 10,000 paths). onPeer sees every peer-topic
// message, whatever the level, so that Status can report why a session failed.
type zapLogger struct {
	z      *zap.Logger
	onPeer func(level zapcore.Level, addr netip.Addr, msg string, fields gobgplog.Fields)
}

var _ gobgplog.Logger = (*zapLogger)(nil)

func (l *zapLogger) log(level zapcore.Level, msg string, fields gobgplog.Fields) {
	if l.onPeer != nil && fields["Topic"] == "Peer" {
		if a, err := netip.ParseAddr(fmt.Sprint(fields["Key"])); err == nil {
			l.onPeer(level, a, msg, fields)
		}
	}
	ce := l.z.Check(level, msg)
	if ce == nil {
		return
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
}

func (l *zapLogger) Panic(msg string, f gobgplog.Fields) { l.log(zapcore.PanicLevel, msg, f) }
func (l *zapLogger) Fatal(msg string, f gobgplog.Fields) { l.log(zapcore.FatalLevel, msg, f) }
func (l *zapLogger) Error(msg string, f gobgplog.Fields) { l.log(zapcore.ErrorLevel, msg, f) }
func (l *zapLogger) Warn(msg string, f gobgplog.Fields)  { l.log(zapcore.WarnLevel, msg, f) }
func (l *zapLogger) Info(msg string, f gobgplog.Fields)  { l.log(zapcore.InfoLevel, msg, f) }
func (l *zapLogger) Debug(msg string, f gobgplog.Fields) { l.log(zapcore.DebugLevel, msg, f) }

// SetLevel is ignored: the zap logger's level is the one source of truth.
func (l *zapLogger) SetLevel(gobgplog.LogLevel) {}

func (l *zapLogger) GetLevel() gobgplog.LogLevel {
	switch {
	case l.z.Core().Enabled(zapcore.DebugLevel):
		return gobgplog.DebugLevel
	case l.z.Core().Enabled(zapcore.InfoLevel):
		return gobgplog.InfoLevel
	case l.z.Core().Enabled(zapcore.WarnLevel):
		return gobgplog.WarnLevel
	}
	return gobgplog.ErrorLevel
}
