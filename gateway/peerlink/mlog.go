package peerlink

import (
	"bytes"
	"strings"

	"go.uber.org/zap"
)

// memberlistLog turns memberlist's "[LEVEL] memberlist: text" lines into
// zap entries, and counts the packets memberlist drops before they reach us
// (it reports them only in its log). The texts are those of memberlist
// v0.7.0; TestForgedAndForeignMessagesChangeNothing fails if they change.
type memberlistLog struct {
	log     *zap.Logger
	dropped func(reason string)
}

var memberlistDrops = []struct{ text, reason string }{
	{"Decrypt packet failed", DropDecrypt},
	{"unacceptable label", DropLabel},
	// Refusals of our own delegates, already counted as DropMember.
	{"ignoring alive message", ""},
	{"Failed push/pull merge", ""},
}

func (w *memberlistLog) Write(p []byte) (int, error) {
	line := string(bytes.TrimSpace(p))
	for _, d := range memberlistDrops {
		if strings.Contains(line, d.text) {
			if d.reason != "" {
				w.dropped(d.reason)
			}
			// Expected under attack and counted: not worth more than debug.
			w.log.Debug(line, zap.String("event", "memberlist"), zap.String("drop", d.reason))
			return len(p), nil
		}
	}
	switch {
	case strings.HasPrefix(line, "[ERR]"):
		w.log.Error(line, zap.String("event", "memberlist"))
	case strings.HasPrefix(line, "[WARN]"):
		w.log.Warn(line, zap.String("event", "memberlist"))
	case strings.HasPrefix(line, "[INFO]"):
		w.log.Info(line, zap.String("event", "memberlist"))
	default:
		w.log.Debug(line, zap.String("event", "memberlist"))
	}
	return len(p), nil
}
