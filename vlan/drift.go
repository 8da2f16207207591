package vlan

import (
	"context"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Drift coalescing. A takeover or a flush deletes and adds thousands of
// entries within milliseconds: one resync after the burst is what repairs
// them, not one per event. The settle time is waited after the last event,
// capped so that a steady trickle still resyncs within the promised second
// (repair = up to driftMaxDelay here + one Reconcile).
const (
	driftSettle   = 30 * time.Millisecond
	driftMaxDelay = 200 * time.Millisecond
	// driftBuffer is the subscription channels' size: large enough that a
	// burst is read from the socket while the watcher is busy, so ENOBUFS
	// (the kernel dropping notifications) stays rare.
	driftBuffer = 4096
	// driftRecvBuffer is the sockets' receive buffer (bytes).
	driftRecvBuffer = 4 << 20
	// resubscribeBackoff spaces attempts when subscribing fails.
	resubscribeBackoff = 200 * time.Millisecond
)

// WatchDrift subscribes to link and neighbour (FDB included) notifications
// in the DataPlane's namespace and calls onDrift when an owned link
// ("nb-…" named, VNI-numbered) changes or goes, or when a static or
// permanent entry on an owned link is changed or deleted: something other
// than Reconcile touched what it programs. The caller answers with a
// Reconcile of its last desired state, which repairs the damage; WatchDrift
// itself changes nothing, so Reconcile calls stay serialised by the caller.
//
// Bursts are coalesced into one call. When a subscription breaks (the
// library closes its channel on any receive error, ENOBUFS under churn:
// notifications were lost), WatchDrift resubscribes and calls onDrift, so
// the caller's full resync covers whatever was missed. onDrift runs on
// WatchDrift's goroutine: it should hand the work to the caller's worker
// (e.g. a non-blocking send on a 1-buffered channel) and return; events
// arriving meanwhile are still read and coalesced.
//
// Our own changes are notified too; they cause one extra Reconcile that
// finds nothing to do, after which the host is quiet. Learned FDB entries
// (node role) come and go without a call: they are neither static nor
// permanent.
//
// onDrift is also called once soon after the subscriptions are in place
// (changes before them were not seen), which tells a caller that the
// watch is live.
//
// WatchDrift blocks until ctx is done and then returns nil; it returns an
// error only if it cannot subscribe at all at start.
func (d *DataPlane) WatchDrift(ctx context.Context, onDrift func()) error {
	w := &driftWatch{d: d, log: d.log.With(zap.String("component", "driftWatch")),
		chanBuf: driftBuffer, recvBuf: driftRecvBuffer}
	if d.driftTuning.chanBuf > 0 {
		w.chanBuf, w.recvBuf = d.driftTuning.chanBuf, d.driftTuning.recvBuf
	}
	if err := w.subscribeLinks(); err != nil {
		return err
	}
	if err := w.subscribeNeighs(); err != nil {
		w.stop()
		return err
	}
	defer w.stop()
	if err := w.refreshOwned(); err != nil {
		return err
	}

	dirty := make(chan struct{}, 1)
	done := make(chan struct{})
	defer func() { <-done }()
	go func() {
		// The caller's onDrift runs here, apart from the event loop, so a
		// slow onDrift never stops the subscriptions from being read.
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-dirty:
			}
			first := time.Now()
			for settled := false; !settled; {
				wait := min(driftSettle, driftMaxDelay-time.Since(first))
				if wait <= 0 {
					break
				}
				select {
				case <-ctx.Done():
					return
				case <-dirty:
				case <-time.After(wait):
					settled = true
				}
			}
			onDrift()
		}
	}()
	mark := func() {
		select {
		case dirty <- struct{}{}:
		default:
		}
	}
	// One resync right away: whatever changed between the caller's last
	// Reconcile and the subscriptions would otherwise go unnoticed.
	mark()

	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-w.links:
			if !ok {
				w.log.Warn("link subscription broke: resubscribing and resyncing", zap.String("event", "driftResubscribe"),
					zap.String("subscription", "links"))
				// The reader has exited but its socket stays open until
				// its done channel closes: close it, or each break leaks
				// a socket and a goroutine.
				close(w.linksDone)
				w.links, w.linksDone = nil, nil
				if !w.retry(ctx, w.subscribeLinks) {
					return nil
				}
				// Links missed while unsubscribed: rebuild the owned set.
				if err := w.refreshOwned(); err != nil {
					w.log.Warn("list links after resubscribing", zap.String("event", "driftListFailed"), zap.Error(err))
				}
				mark()
				continue
			}
			if w.link(u) {
				mark()
			}
		case u, ok := <-w.neighs:
			if !ok {
				w.log.Warn("neighbour subscription broke: resubscribing and resyncing", zap.String("event", "driftResubscribe"),
					zap.String("subscription", "neighbours"))
				close(w.neighsDone)
				w.neighs, w.neighsDone = nil, nil
				if !w.retry(ctx, w.subscribeNeighs) {
					return nil
				}
				mark()
				continue
			}
			if w.neigh(u) {
				mark()
			}
		}
	}
}

// driftTuning overrides the subscription sizes; tests shrink them to
// provoke ENOBUFS. Zero values take the defaults.
type driftTuning struct {
	chanBuf, recvBuf int
}

// driftWatch is the event loop's state; only WatchDrift's goroutine uses it.
type driftWatch struct {
	d                *DataPlane
	log              *zap.Logger
	chanBuf, recvBuf int
	// owned maps the index of each owned link to its name: neighbour
	// notifications carry only the index.
	owned map[int]string
	// foreignMTU maps the index of every other link to its MTU, so that
	// an MTU change is noticed (see link).
	foreignMTU map[int]int
	// One done channel per subscription: closing it closes the socket,
	// which ends the library's reader and closes the update channel.
	links      chan netlink.LinkUpdate
	linksDone  chan struct{}
	neighs     chan netlink.NeighUpdate
	neighsDone chan struct{}
}

func (w *driftWatch) subscribeLinks() error {
	ch := make(chan netlink.LinkUpdate, w.chanBuf)
	done := make(chan struct{})
	err := netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{
		Namespace:         w.d.ns,
		ErrorCallback:     w.subscriptionError("links"),
		ReceiveBufferSize: w.recvBuf,
	})
	if err != nil {
		return fmt.Errorf("subscribe to link notifications: %w", err)
	}
	w.links, w.linksDone = ch, done
	return nil
}

func (w *driftWatch) subscribeNeighs() error {
	ch := make(chan netlink.NeighUpdate, w.chanBuf)
	done := make(chan struct{})
	err := netlink.NeighSubscribeWithOptions(ch, done, netlink.NeighSubscribeOptions{
		Namespace:         w.d.ns,
		ErrorCallback:     w.subscriptionError("neighbours"),
		ReceiveBufferSize: w.recvBuf,
	})
	if err != nil {
		return fmt.Errorf("subscribe to neighbour notifications: %w", err)
	}
	w.neighs, w.neighsDone = ch, done
	return nil
}

func (w *driftWatch) subscriptionError(which string) func(error) {
	return func(err error) {
		w.log.Warn("netlink subscription error", zap.String("event", "driftSubscriptionError"),
			zap.String("subscription", which), zap.Error(err))
	}
}

// retry resubscribes until it works or ctx ends (false).
func (w *driftWatch) retry(ctx context.Context, subscribe func() error) bool {
	for {
		err := subscribe()
		if err == nil {
			return true
		}
		w.log.Warn("resubscribe failed", zap.String("event", "driftResubscribeFailed"), zap.Error(err))
		select {
		case <-ctx.Done():
			return false
		case <-time.After(resubscribeBackoff):
		}
	}
}

// stop closes the subscriptions and drains their channels until the
// library's readers have exited (they block on a full channel otherwise).
func (w *driftWatch) stop() {
	if w.linksDone != nil {
		close(w.linksDone)
		for range w.links {
		}
		w.links, w.linksDone = nil, nil
	}
	if w.neighsDone != nil {
		close(w.neighsDone)
		for range w.neighs {
		}
		w.neighs, w.neighsDone = nil, nil
	}
}

func (w *driftWatch) refreshOwned() error {
	var ops opCount
	links, err := retryDump(&ops, "links", w.d.h.LinkList)
	if err != nil {
		return fmt.Errorf("watch drift: %w", err)
	}
	w.owned = map[int]string{}
	w.foreignMTU = map[int]int{}
	for _, l := range links {
		if _, _, ok := segmentLink(l.Attrs().Name); ok {
			w.owned[l.Attrs().Index] = l.Attrs().Name
		} else {
			w.foreignMTU[l.Attrs().Index] = l.Attrs().MTU
		}
	}
	return nil
}

// link records an owned link's index and says whether the update is drift.
func (w *driftWatch) link(u netlink.LinkUpdate) bool {
	a := u.Attrs()
	_, _, ours := segmentLink(a.Name)
	if !ours {
		// A foreign link that took an index we knew (indexes are reused
		// only after deletion, which we saw) is not ours any more.
		delete(w.owned, a.Index)
		// An MTU change under a segment (the underlay device, an access
		// uplink) is reported within milliseconds, not at the next resync.
		old, seen := w.foreignMTU[a.Index]
		w.foreignMTU[a.Index] = a.MTU
		if u.Header.Type == unix.RTM_DELLINK {
			delete(w.foreignMTU, a.Index)
			return false
		}
		return seen && old != a.MTU
	}
	if u.Header.Type == unix.RTM_DELLINK {
		delete(w.owned, a.Index)
		w.log.Info("owned link deleted", zap.String("event", "driftLinkDeleted"), zap.String("link", a.Name))
	} else {
		w.owned[a.Index] = a.Name
	}
	return true
}

// neigh says whether a neighbour/FDB update is drift: a static or
// permanent entry on an owned link (what Reconcile programs), changed or
// deleted.
func (w *driftWatch) neigh(u netlink.NeighUpdate) bool {
	name, ok := w.owned[u.LinkIndex]
	if !ok {
		return false
	}
	if u.State&(netlink.NUD_PERMANENT|netlink.NUD_NOARP) == 0 {
		return false
	}
	if u.Type == unix.RTM_DELNEIGH {
		w.log.Debug("owned entry deleted", zap.String("event", "driftEntryDeleted"), zap.String("link", name),
			zap.Stringer("mac", u.HardwareAddr), zap.Stringer("ip", u.IP))
	}
	return true
}
