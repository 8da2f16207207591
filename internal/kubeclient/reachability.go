// Package kubeclient keeps netbridge's API clients useful through API
// server outages: a Reachability tracker probes /readyz on its own
// connection, says when the server goes and comes back, and gates the
// informers' re-list and re-watch on it, so that they resume as soon as the
// server answers instead of sleeping through client-go's reflector back-off
// (up to 30–60 s after a few failed watches).
package kubeclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
)

// ReachabilityOptions tune NewReachability. Zero values take the defaults.
type ReachabilityOptions struct {
	// Interval between probes while the server answers (default 1s).
	Interval time.Duration
	// RetryInterval is the first pause after a failed probe; it doubles up
	// to MaxRetryInterval (defaults 250ms and 1s): the return of the server
	// is seen within MaxRetryInterval.
	RetryInterval    time.Duration
	MaxRetryInterval time.Duration
	// Timeout of one probe (default 2s): a hung server fails it.
	Timeout time.Duration
	// FailureThreshold is the number of failed probes in a row that make
	// the server unreachable (default 2): one slow answer is not an outage.
	FailureThreshold int
	// GateMaxWait bounds how long an informer's list or watch waits for
	// the server (default 5m), so that a wrong verdict can never stop an
	// informer for good. It is long on purpose: every call that goes
	// through to a dead server adds a step to the reflector's back-off,
	// and a sleeping reflector does not see the server come back.
	GateMaxWait time.Duration
	// ReminderInterval repeats the apiUnreachable line while the outage
	// lasts (default 10s).
	ReminderInterval time.Duration
	// Logger gets apiUnreachable / apiReachable lines.
	Logger logr.Logger
	// OnChange is called on every transition (metrics), after the first
	// probe too; it must not block.
	OnChange func(reachable bool)
}

func (o *ReachabilityOptions) defaults() {
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.RetryInterval <= 0 {
		o.RetryInterval = 250 * time.Millisecond
	}
	if o.MaxRetryInterval <= 0 {
		o.MaxRetryInterval = time.Second
	}
	if o.MaxRetryInterval < o.RetryInterval {
		o.MaxRetryInterval = o.RetryInterval
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.FailureThreshold <= 0 {
		o.FailureThreshold = 2
	}
	if o.GateMaxWait <= 0 {
		o.GateMaxWait = 5 * time.Minute
	}
	if o.ReminderInterval <= 0 {
		o.ReminderInterval = 10 * time.Second
	}
	if o.OnChange == nil {
		o.OnChange = func(bool) {}
	}
}

// Reachability tracks whether the API server answers. It starts
// unreachable: nothing has answered yet.
type Reachability struct {
	probe rest.Interface
	host  string
	o     ReachabilityOptions

	kick chan struct{}

	mu        sync.Mutex
	reachable bool
	probed    bool
	since     time.Time
	lastErr   error
	changed   chan struct{} // closed and replaced on every transition
	// returns counts the server's returns after an outage; resumed is
	// closed and replaced when an informer's first list or watch after a
	// return succeeds.
	returns uint64
	resumed chan struct{}
}

// NewReachability builds a tracker for the server of cfg. Its probes use a
// transport of their own, so a dead connection shared with the informers
// cannot hide that the server is back (or hung). Start it with Run.
func NewReachability(cfg *rest.Config, o ReachabilityOptions) (*Reachability, error) {
	o.defaults()
	pc := rest.CopyConfig(cfg)
	pc.Timeout = o.Timeout
	pc.QPS, pc.Burst = -1, 0
	pc.RateLimiter = nil
	// A Dial of our own keeps client-go from sharing its cached transport.
	pc.Dial = (&net.Dialer{Timeout: o.Timeout, KeepAlive: 30 * time.Second}).DialContext
	cs, err := kubernetes.NewForConfig(pc)
	if err != nil {
		return nil, fmt.Errorf("probe client for %s: %w", cfg.Host, err)
	}
	return &Reachability{
		probe:   cs.Discovery().RESTClient(),
		host:    strings.TrimSuffix(cfg.Host, "/"),
		o:       o,
		kick:    make(chan struct{}, 1),
		changed: make(chan struct{}),
		resumed: make(chan struct{}),
		since:   time.Now(),
	}, nil
}

// Host is the server probed, for messages.
func (r *Reachability) Host() string { return r.host }

// Reachable says whether the last verdict was "the server answers".
func (r *Reachability) Reachable() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reachable
}

// Changed is closed at the next transition; take it again after.
func (r *Reachability) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// WaitReachable blocks until the server answers or ctx ends.
func (r *Reachability) WaitReachable(ctx context.Context) error {
	for {
		ch := r.Changed()
		if r.Reachable() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// OnReturn calls fn, on a goroutine of its own, each time the server
// answers again after it was unreachable, until ctx ends: the place to
// re-run everything that failed or was due during the outage.
func (r *Reachability) OnReturn(ctx context.Context, fn func()) {
	r.each(ctx, r.Changed, r.Reachable, fn)
}

// OnResumed calls fn, on a goroutine of its own, each time an informer's
// first list or watch after a return succeeds, until ctx ends. Work
// queued by OnReturn read caches that may still lack the last writes made
// before the outage; by now they have them, or their events are on the way.
func (r *Reachability) OnResumed(ctx context.Context, fn func()) {
	r.each(ctx, r.resumedChan, func() bool { return true }, fn)
}

func (r *Reachability) resumedChan() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.resumed
}

// each calls fn each time next's channel closes and ok holds.
func (r *Reachability) each(ctx context.Context, next func() <-chan struct{}, ok func() bool, fn func()) {
	go func() {
		for {
			ch := next()
			select {
			case <-ctx.Done():
				return
			case <-ch:
			}
			if ok() {
				fn()
			}
		}
	}()
}

// succeeded records a list or watch that went through for the informer
// whose last success was after return *seen; the first one after a return
// wakes OnResumed.
func (r *Reachability) succeeded(seen *atomic.Uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if seen.Swap(r.returns) != r.returns {
		close(r.resumed)
		r.resumed = make(chan struct{})
	}
}

// Check is a healthz checker (readiness): an error while the server does
// not answer.
func (r *Reachability) Check(*http.Request) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.reachable {
		return nil
	}
	if !r.probed {
		return fmt.Errorf("API server %s: not probed yet", r.host)
	}
	return fmt.Errorf("API server %s unreachable for %s: %v", r.host, time.Since(r.since).Round(time.Second), r.lastErr)
}

// Kick asks for a probe now (a request just failed on the connection).
func (r *Reachability) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run probes until ctx ends.
func (r *Reachability) Run(ctx context.Context) {
	failures := 0
	retry := r.o.RetryInterval
	lastReminder := time.Now()
	for {
		err := r.probeOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		wait := r.o.Interval
		if err == nil {
			failures = 0
			retry = r.o.RetryInterval
			r.set(true, nil)
		} else {
			failures++
			r.mu.Lock()
			first, wasUp := !r.probed, r.reachable
			r.mu.Unlock()
			// At start-up one failure is enough: nothing answered yet.
			if first || !wasUp || failures >= r.o.FailureThreshold {
				if r.set(false, err) {
					lastReminder = time.Now()
				} else if time.Since(lastReminder) >= r.o.ReminderInterval {
					lastReminder = time.Now()
					r.mu.Lock()
					down := time.Since(r.since)
					r.mu.Unlock()
					r.o.Logger.Error(err, "API server still unreachable", "event", "apiUnreachable", "host", r.host,
						"for", down.Round(time.Millisecond).String())
				}
			}
			wait = retry
			retry = nextPause(retry, r.o.MaxRetryInterval)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-r.kick:
			t.Stop()
		case <-t.C:
		}
	}
}

func (r *Reachability) probeOnce(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.o.Timeout)
	defer cancel()
	err := r.probe.Get().AbsPath("/readyz").Do(ctx).Error()
	// The server answered but will not tell (RBAC without
	// system:public-info-viewer): it is there.
	if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("GET %s/readyz: %w", r.host, err)
	}
	return nil
}

// set records a verdict; it reports whether it was a transition.
func (r *Reachability) set(up bool, err error) bool {
	r.mu.Lock()
	first := !r.probed
	r.probed = true
	r.lastErr = err
	if r.reachable == up && !first {
		r.mu.Unlock()
		return false
	}
	prev := time.Since(r.since)
	if up && !first {
		r.returns++
	}
	r.reachable = up
	r.since = time.Now()
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()

	if up {
		r.o.Logger.Info("API server reachable", "event", "apiReachable", "host", r.host,
			"after", prev.Round(time.Millisecond).String())
	} else {
		r.o.Logger.Error(err, "API server unreachable", "event", "apiUnreachable", "host", r.host)
	}
	r.o.OnChange(up)
	return true
}

// gate waits until the server answers, ctx ends or GateMaxWait passes.
func (r *Reachability) gate(ctx context.Context) {
	if r.Reachable() {
		return
	}
	t := time.NewTimer(r.o.GateMaxWait)
	defer t.Stop()
	for {
		ch := r.Changed()
		if r.Reachable() {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			return
		case <-ch:
		}
	}
}

// observe kicks a probe when a call failed without an answer from the
// server (refused, reset, timed out): the verdict then follows at once.
func (r *Reachability) observe(err error) {
	var status apierrors.APIStatus
	if err != nil && !errors.As(err, &status) && !errors.Is(err, context.Canceled) {
		r.Kick()
	}
}

// ListerWatcher wraps lw so that list and watch calls wait for the server
// while it is unreachable, and a call the server did not answer (refused,
// reset) waits for it and is tried again instead of failing: each failure
// the reflector sees adds a step to its back-off (0.8 s doubling, with
// jitter), which it sleeps after the server is back. A wrapped informer's
// first success after a return wakes OnResumed.
func (r *Reachability) ListerWatcher(lw toolscache.ListerWatcher) toolscache.ListerWatcher {
	in := toolscache.ToListerWatcherWithContext(lw)
	seen := &atomic.Uint64{}
	return &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			return retryUnanswered(ctx, r, seen, func(ctx context.Context) (runtime.Object, error) { return in.ListWithContext(ctx, opts) })
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			return retryUnanswered(ctx, r, seen, func(ctx context.Context) (watch.Interface, error) { return in.WatchWithContext(ctx, opts) })
		},
	}
}

// retryUnanswered runs call once the server answers, and again while it
// fails unanswered, until ctx ends or GateMaxWait passes: only then, or
// for an answer of the server, does the caller see the error.
func retryUnanswered[T any](ctx context.Context, r *Reachability, seen *atomic.Uint64, call func(context.Context) (T, error)) (T, error) {
	deadline := time.Now().Add(r.o.GateMaxWait)
	pause := r.o.RetryInterval
	for {
		r.gate(ctx)
		v, err := call(ctx)
		if err == nil {
			r.succeeded(seen)
			return v, nil
		}
		r.observe(err)
		if !unanswered(err) || ctx.Err() != nil || time.Now().After(deadline) {
			return v, err
		}
		// The verdict may still say "reachable" for a probe or two: pause
		// (until a transition at most) so that the retries do not spin.
		ch := r.Changed()
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
		case <-ch:
		case <-t.C:
		}
		t.Stop()
		pause = nextPause(pause, r.o.MaxRetryInterval)
	}
}

// unanswered: the call failed without an answer from the server, which is
// gone or restarting (refused, reset, closed mid-way, timed out).
func unanswered(err error) bool {
	var status apierrors.APIStatus
	if err == nil || errors.As(err, &status) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ne net.Error
	return errors.Is(err, ErrUnreachable) || utilnet.IsConnectionRefused(err) || utilnet.IsConnectionReset(err) || utilnet.IsProbableEOF(err) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// nextPause doubles p up to max.
func nextPause(p, max time.Duration) time.Duration { return min(2*p, max) }

// ErrUnreachable is the error of a request that WrapTransport did not send.
var ErrUnreachable = errors.New("API server unreachable")

// WrapTransport (for rest.Config.Wrap) fails requests at once while the
// server is unreachable. A write sent to a server that is restarting can
// hang until it is ready and more; the reconcile that made it holds its
// key meanwhile, so the requeue at the return would wait for it.
func (r *Reachability) WrapTransport(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		if !r.Reachable() {
			return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, ErrUnreachable)
		}
		return rt.RoundTrip(req)
	})
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// NewInformer is for controller-runtime's cache.Options.NewInformer: the
// default informer over a gated ListerWatcher.
func (r *Reachability) NewInformer(lw toolscache.ListerWatcher, obj runtime.Object, resync time.Duration, indexers toolscache.Indexers) toolscache.SharedIndexInformer {
	return toolscache.NewSharedIndexInformer(r.ListerWatcher(lw), obj, resync, indexers)
}
