package vlan

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// EgressGuard keeps a segment's legacy gateway address apart on the two
// sides of its bridge (local egress): the active gateway holds the address
// on the segment bridge and answers for it to the VMs (VXLAN side), while
// the legacy hosts keep the legacy router (VLAN side). A bridge-family
// table drops the ARP frames about the gateway address that would cross
// the VLAN port, per (port, address):
//
//	table bridge netbridge_egress {
//	  chain forward { type filter hook forward priority filter; policy accept;
//	    iifname PORT arp daddr ip GW drop                           # requests for GW, GARPs: not to the VMs
//	    iifname PORT arp saddr ip GW drop                           # the legacy router's replies and requests
//	    oifname PORT arp saddr ip GW drop
//	    oifname PORT arp daddr ip GW arp operation request drop }   # the VMs' requests: not to the legacy router
//	  chain input  { ...; iifname PORT arp saddr/daddr ip GW drop } # never answer the legacy side
//	  chain output { ...; oifname PORT arp saddr/daddr ip GW drop } # our replies and GARPs stay on the VXLAN side
//	}
//
// The legacy router's requests (for a legacy host or a VM) are dropped
// too: Linux updates an existing neighbour entry from the sender of any ARP
// packet it sees, so a VM would re-learn the router's MAC for its gateway.
// The router still resolves the VMs: the bridge answers for them
// (SetProxy, proxy_arp on the VLAN port) before the forward hook (docs/architecture.md, "Local egress").
type EgressGuard struct {
	mu      sync.Mutex
	conn    *nftables.Conn
	table   *nftables.Table
	applied []EgressRule
	fresh   bool // nothing applied yet: the next Set always writes
	h       *netlink.Handle
	proxied []string // ports SetProxy turned proxy_arp on
}

// EgressRule is one segment's local egress: its VLAN port and the legacy
// gateway address (IPv4) that must not be spoken about across it.
type EgressRule struct {
	Port    string
	Gateway netip.Addr
}

// EgressGuardTable is the nftables table the egress guard owns.
const EgressGuardTable = "netbridge_egress"

// NewEgressGuard returns a guard for the current namespace; the table is
// written by the first Set.
func NewEgressGuard() (*EgressGuard, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("egress guard: netlink: %w", err)
	}
	return newEgressGuard(h, nftables.AsLasting())
}

// NewEgressGuardIn is NewEgressGuard in another network namespace.
func NewEgressGuardIn(ns netns.NsHandle) (*EgressGuard, error) {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("egress guard: netlink: %w", err)
	}
	return newEgressGuard(h, nftables.WithNetNSFd(int(ns)), nftables.AsLasting())
}

func newEgressGuard(h *netlink.Handle, opts ...nftables.ConnOption) (*EgressGuard, error) {
	conn, err := nftables.New(opts...)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("egress guard: nftables: %w", err)
	}
	return &EgressGuard{conn: conn, h: h, fresh: true,
		table: &nftables.Table{Name: EgressGuardTable, Family: nftables.TableFamilyBridge}}, nil
}

// Close releases the netlink connection; the table stays (a restarted
// agent rewrites it on its first pass).
func (g *EgressGuard) Close() error {
	g.h.Close()
	return g.conn.CloseLasting()
}

// Rules returns what the last Set applied.
func (g *EgressGuard) Rules() []EgressRule {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.applied)
}

// Set replaces the guard's rules in one transaction (no rules: no table).
// Unchanged rules cost nothing.
func (g *EgressGuard) Set(rules []EgressRule) error {
	rules = sortedEgressRules(rules)
	for _, r := range rules {
		if !r.Gateway.Is4() || r.Port == "" {
			return fmt.Errorf("egress guard: %s on %q: an IPv4 gateway address and a port are needed", r.Gateway, r.Port)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.fresh && slices.Equal(rules, g.applied) {
		return nil
	}
	tables, err := g.conn.ListTablesOfFamily(nftables.TableFamilyBridge)
	if err != nil {
		return fmt.Errorf("egress guard: list bridge tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == EgressGuardTable {
			g.conn.DelTable(g.table)
		}
	}
	if len(rules) > 0 {
		g.fill(rules)
	}
	if err := g.conn.Flush(); err != nil {
		return fmt.Errorf("egress guard: write table %s: %w", EgressGuardTable, err)
	}
	g.applied, g.fresh = rules, false
	return nil
}

// ARP over Ethernet, offsets from the start of the Ethernet header.
const (
	llEtherType = 12
	llARPOp     = 14 + 6
	llARPSPA    = 14 + 14
	llARPTPA    = 14 + 24
)

func (g *EgressGuard) fill(rules []EgressRule) {
	g.conn.AddTable(g.table)
	policy := nftables.ChainPolicyAccept
	chain := func(name string, hook *nftables.ChainHook) *nftables.Chain {
		return g.conn.AddChain(&nftables.Chain{Name: name, Table: g.table, Type: nftables.ChainTypeFilter,
			Hooknum: hook, Priority: nftables.ChainPriorityFilter, Policy: &policy})
	}
	forward, input, output := chain("forward", nftables.ChainHookForward), chain("input", nftables.ChainHookInput), chain("output", nftables.ChainHookOutput)
	// op: 0 any ARP operation, +1 requests only.
	drop := func(c *nftables.Chain, port expr.MetaKey, r EgressRule, field uint32, op int) {
		ip := r.Gateway.As4()
		ex := []expr.Any{
			&expr.Meta{Key: port, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(r.Port)},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: llEtherType, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(0x0806)},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: field, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ip[:]},
		}
		if op != 0 {
			ex = append(ex,
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: llARPOp, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(1)})
		}
		ex = append(ex, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
		g.conn.AddRule(&nftables.Rule{Table: g.table, Chain: c, Exprs: ex})
	}
	in, out := expr.MetaKeyIIFNAME, expr.MetaKeyOIFNAME
	for _, r := range rules {
		drop(forward, in, r, llARPTPA, 0)
		drop(forward, in, r, llARPSPA, 0)
		drop(forward, out, r, llARPSPA, 0)
		drop(forward, out, r, llARPTPA, +1)
		drop(input, in, r, llARPSPA, 0)
		drop(input, in, r, llARPTPA, 0)
		drop(output, out, r, llARPSPA, 0)
		drop(output, out, r, llARPTPA, 0)
	}
}

func sortedEgressRules(rules []EgressRule) []EgressRule {
	out := slices.Clone(rules)
	slices.SortFunc(out, func(a, b EgressRule) int {
		if a.Port != b.Port {
			if a.Port < b.Port {
				return -1
			}
			return 1
		}
		return a.Gateway.Compare(b.Gateway)
	})
	return slices.Compact(out)
}
