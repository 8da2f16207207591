package kubeclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Ping asks the server of cfg for /readyz, waiting at most timeout, and
// says what is wrong naming the server: a command-line tool's first call,
// so that a down or hung API server fails the command at once with a clear
// message instead of hanging it.
func Ping(ctx context.Context, cfg *rest.Config, timeout time.Duration) error {
	host := strings.TrimSuffix(cfg.Host, "/")
	pc := rest.CopyConfig(cfg)
	pc.Timeout = timeout
	cs, err := kubernetes.NewForConfig(pc)
	if err != nil {
		return fmt.Errorf("client for API server %s: %w", host, err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err = cs.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error()
	var netErr net.Error
	switch {
	case err == nil, apierrors.IsForbidden(err):
		// Forbidden: it answered, and these credentials may not read /readyz.
		return nil
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("API server %s refused the credentials: %w", host, err)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return fmt.Errorf("API server %s did not answer within %s (hung, or packets dropped on the way): %w", host, timeout, err)
	case apierrors.IsInternalError(err), apierrors.IsServiceUnavailable(err):
		return fmt.Errorf("API server %s is not ready: %w", host, err)
	default:
		return fmt.Errorf("API server %s unreachable: %w", host, err)
	}
}
