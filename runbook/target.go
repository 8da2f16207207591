package runbook

import (
	"context"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	"github.com/netbridge-io/netbridge/internal/kubeclient"
)

// Bounds of netbridgectl's talk with the API server: a down or hung server
// fails a command with an error naming it instead of hanging it.
const (
	// ConnectTimeout bounds the first contact (CheckServer).
	ConnectTimeout = 10 * time.Second
	// RequestTimeout bounds every later request (rest.Config.Timeout);
	// netbridgectl sends no watches, which it would cut.
	RequestTimeout = 30 * time.Second
)

// BoundServer sets RequestTimeout on cfg and checks, within
// ConnectTimeout, that its server answers; the error names the server and
// says whether it refused, did not answer or is not ready.
func BoundServer(ctx context.Context, cfg *rest.Config) error {
	if cfg.Timeout == 0 {
		cfg.Timeout = RequestTimeout
	}
	return kubeclient.Ping(ctx, cfg, ConnectTimeout)
}

// Target is one command argument: a segment or a VM.
type Target struct {
	Segment *SegmentRef
	VM      *types.NamespacedName
}

func (t Target) String() string {
	if t.Segment != nil {
		return t.Segment.String()
	}
	return t.VM.String()
}

// ResolveTargets reads arguments as segments or VMs:
//   - "ns/name" is always a VM;
//   - "bc.seg" is a segment when BridgeConfig bc has a segment seg;
//   - anything else is a VM name in namespace.
//
// VM names may contain dots, so the segment reading needs the snapshot's
// BridgeConfigs to decide. Segments are refused when allowSegments is false.
func ResolveTargets(args []string, namespace string, s *Snapshot, allowSegments bool) ([]Target, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("name at least one VM (name or namespace/name)%s", map[bool]string{true: " or segment (bridgeconfig.segment)"}[allowSegments])
	}
	var out []Target
	for _, arg := range args {
		if arg == "" {
			return nil, fmt.Errorf("empty argument")
		}
		if ns, name, ok := strings.Cut(arg, "/"); ok {
			if ns == "" || name == "" || strings.Contains(name, "/") {
				return nil, fmt.Errorf("argument %q: want namespace/name", arg)
			}
			out = append(out, Target{VM: &types.NamespacedName{Namespace: ns, Name: name}})
			continue
		}
		if ref, ok := ParseSegmentRef(arg); ok {
			if _, seg, _ := s.Segment(ref); seg != nil {
				if !allowSegments {
					return nil, fmt.Errorf("argument %q is a segment: this command takes VMs (name or namespace/name)", arg)
				}
				out = append(out, Target{Segment: &ref})
				continue
			}
		}
		out = append(out, Target{VM: &types.NamespacedName{Namespace: namespace, Name: arg}})
	}
	return out, nil
}
