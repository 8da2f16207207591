package daemon

import (
	"context"
	"fmt"
	"net/netip"

	"go.uber.org/zap"

	"github.com/netbridge-io/netbridge/gateway"
)

// localVTEP is this node's VTEP: the flag, else what the source says (the
// node annotation or InternalIP in Kubernetes mode).
func localVTEP(ctx context.Context, o Options, src gateway.Source) (netip.Addr, error) {
	if o.VTEP.IsValid() || src == nil {
		return o.VTEP, nil
	}
	in, err := src.Inputs(ctx)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("read this node's VTEP: %w", err)
	}
	return in.LocalVTEP, nil
}

// underlayVTEP is the VTEP the move watcher binds to (its interface);
// unknown at start, the watcher reads every interface, as before.
func underlayVTEP(ctx context.Context, o Options, src gateway.Source, log *zap.Logger) netip.Addr {
	vtep, err := localVTEP(ctx, o, src)
	if err != nil || !vtep.IsValid() {
		log.Info("VTEP not known yet: the VM move watcher reads every interface",
			zap.String("event", "moveWatchAllInterfaces"), zap.Error(err))
	}
	return vtep
}
