package vlan

import (
	"fmt"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Fence is a kernel dead-man switch on the VLAN side of a gateway: a
// bridge-family nftables table that drops every frame entering or leaving a
// guarded uplink port unless that port is in the "alive" set, whose
// elements expire after the TTL. The agent refreshes them while it is the
// segment's active gateway; if it dies (or wedges), the kernel stops
// bridging the VLAN within the TTL — before a standby, which waits for the
// lease to expire, attaches. Self-fencing that does not need a live agent.
//
//	table bridge netbridge_fence {
//	  set guarded { type ifname; }
//	  set alive   { type ifname; flags timeout; }
//	  chain forward { type filter hook forward priority filter;
//	    iifname @guarded iifname != @alive drop
//	    oifname @guarded oifname != @alive drop } }
type Fence struct {
	ttl     time.Duration
	mu      sync.Mutex
	conn    *nftables.Conn
	table   *nftables.Table
	guarded *nftables.Set
	alive   *nftables.Set
}

// FenceTable is the nftables table the fence owns.
const FenceTable = "netbridge_fence"

// NewFence installs (or adopts, on restart: elements refreshed by the
// previous run keep counting down) the fence in the current namespace.
func NewFence(ttl time.Duration) (*Fence, error) { return newFence(ttl, nftables.AsLasting()) }

// NewFenceIn is NewFence in another network namespace. The connection is
// opened once (ns may be closed afterwards); Close releases it.
func NewFenceIn(ns netns.NsHandle, ttl time.Duration) (*Fence, error) {
	return newFence(ttl, nftables.WithNetNSFd(int(ns)), nftables.AsLasting())
}

// Close releases the netlink connection; the kernel table stays.
func (f *Fence) Close() error { return f.conn.CloseLasting() }

func newFence(ttl time.Duration, opts ...nftables.ConnOption) (*Fence, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("fence ttl must be positive, got %s", ttl)
	}
	conn, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	f := &Fence{ttl: ttl, conn: conn,
		table: &nftables.Table{Name: FenceTable, Family: nftables.TableFamilyBridge}}
	if err := f.ensure(); err != nil {
		_ = conn.CloseLasting()
		return nil, err
	}
	return f, nil
}

func (f *Fence) ensure() error {
	tables, err := f.conn.ListTablesOfFamily(nftables.TableFamilyBridge)
	if err != nil {
		return fmt.Errorf("fence: list bridge tables (kernel without nf_tables bridge support?): %w", err)
	}
	for _, t := range tables {
		if t.Name != FenceTable {
			continue
		}
		// Adopt: a restarted agent must not reset the alive set, or it
		// would cut the VLAN it keeps bridging.
		if f.guarded, err = f.conn.GetSetByName(f.table, "guarded"); err == nil {
			if f.alive, err = f.conn.GetSetByName(f.table, "alive"); err == nil {
				return nil
			}
		}
		// Half-built (a crash mid-install): rebuild it.
		f.conn.DelTable(f.table)
		if err := f.conn.Flush(); err != nil {
			return fmt.Errorf("fence: remove half-built table: %w", err)
		}
		break
	}
	f.conn.AddTable(f.table)
	f.guarded = &nftables.Set{Table: f.table, Name: "guarded", KeyType: nftables.TypeIFName}
	f.alive = &nftables.Set{Table: f.table, Name: "alive", KeyType: nftables.TypeIFName, HasTimeout: true}
	if err := f.conn.AddSet(f.guarded, nil); err != nil {
		return fmt.Errorf("fence: set guarded: %w", err)
	}
	if err := f.conn.AddSet(f.alive, nil); err != nil {
		return fmt.Errorf("fence: set alive: %w", err)
	}
	policy := nftables.ChainPolicyAccept
	chain := f.conn.AddChain(&nftables.Chain{Name: "forward", Table: f.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &policy})
	for _, key := range []expr.MetaKey{expr.MetaKeyIIFNAME, expr.MetaKeyOIFNAME} {
		f.conn.AddRule(&nftables.Rule{Table: f.table, Chain: chain, Exprs: []expr.Any{
			&expr.Meta{Key: key, Register: 1},
			&expr.Lookup{SourceRegister: 1, SetName: f.guarded.Name, SetID: f.guarded.ID},
			&expr.Lookup{SourceRegister: 1, SetName: f.alive.Name, SetID: f.alive.ID, Invert: true},
			&expr.Verdict{Kind: expr.VerdictDrop},
		}})
	}
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("fence: install table %s: %w", FenceTable, err)
	}
	return nil
}

func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// Guard sets the ports the fence watches and, for those the agent vouches
// for, how long each stays alive without a further refresh (capped at the
// fence's TTL). One atomic transaction: a refresh never drops a frame.
func (f *Fence) Guard(guarded []string, alive map[string]time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.conn.FlushSet(f.guarded)
	f.conn.FlushSet(f.alive)
	var g, a []nftables.SetElement
	for _, p := range guarded {
		g = append(g, nftables.SetElement{Key: ifname(p)})
	}
	for p, d := range alive {
		if d > f.ttl {
			d = f.ttl
		}
		// nftables counts element timeouts in milliseconds.
		if d < time.Millisecond {
			continue
		}
		a = append(a, nftables.SetElement{Key: ifname(p), Timeout: d})
	}
	if len(g) > 0 {
		if err := f.conn.SetAddElements(f.guarded, g); err != nil {
			return fmt.Errorf("fence: guarded ports: %w", err)
		}
	}
	if len(a) > 0 {
		if err := f.conn.SetAddElements(f.alive, a); err != nil {
			return fmt.Errorf("fence: alive ports: %w", err)
		}
	}
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("fence: refresh %v: %w", guarded, err)
	}
	return nil
}

// TTL is how long a port stays alive without a refresh.
func (f *Fence) TTL() time.Duration { return f.ttl }

// Remove deletes the fence table (the agent no longer bridges anything).
func (f *Fence) Remove() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.conn.DelTable(f.table)
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("fence: remove table: %w", err)
	}
	return nil
}

// Alive lists the guarded ports that bridge right now (alive, not expired).
func (f *Fence) Alive() ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	guarded, err := f.conn.GetSetElements(f.guarded)
	if err != nil {
		return nil, fmt.Errorf("fence: list guarded: %w", err)
	}
	alive, err := f.conn.GetSetElements(f.alive)
	if err != nil {
		return nil, fmt.Errorf("fence: list alive: %w", err)
	}
	live := map[string]bool{}
	for _, e := range alive {
		if e.Expires > 0 {
			live[string(trimNUL(e.Key))] = true
		}
	}
	var out []string
	for _, e := range guarded {
		if n := string(trimNUL(e.Key)); live[n] {
			out = append(out, n)
		}
	}
	return out, nil
}

// Guarded lists the ports the fence watches.
func (f *Fence) Guarded() ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	guarded, err := f.conn.GetSetElements(f.guarded)
	if err != nil {
		return nil, fmt.Errorf("fence: list guarded: %w", err)
	}
	var out []string
	for _, e := range guarded {
		out = append(out, string(trimNUL(e.Key)))
	}
	return out, nil
}

func trimNUL(b []byte) []byte {
	for i, c := range b {
		if c == 0 {
			return b[:i]
		}
	}
	return b
}
