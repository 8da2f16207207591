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
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
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
	go func() {
		for {
			ch := r.Changed()
			select {
			case <-ctx.Done():
				return
			case <-ch:
			}
			if r.Reachable() {
				fn()
			}
		}
	}()
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
			retry = min(2*retry, r.o.MaxRetryInterval)
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
// while it is unreachable: the reflector then retries the moment the server
// is back, and its back-off never grows past the first failures.
func (r *Reachability) ListerWatcher(lw toolscache.ListerWatcher) toolscache.ListerWatcher {
	in := toolscache.ToListerWatcherWithContext(lw)
	return &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			r.gate(ctx)
			obj, err := in.ListWithContext(ctx, opts)
			r.observe(err)
			return obj, err
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			r.gate(ctx)
			w, err := in.WatchWithContext(ctx, opts)
			r.observe(err)
			return w, err
		},
	}
}

// NewInformer is for controller-runtime's cache.Options.NewInformer: the
// default informer over a gated ListerWatcher.
func (r *Reachability) NewInformer(lw toolscache.ListerWatcher, obj runtime.Object, resync time.Duration, indexers toolscache.Indexers) toolscache.SharedIndexInformer {
	return toolscache.NewSharedIndexInformer(r.ListerWatcher(lw), obj, resync, indexers)
}
