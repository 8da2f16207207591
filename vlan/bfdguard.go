package vlan

import (
	"fmt"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// BFDGuard enforces RFC 5881's TTL check that GoBGP's BFD does not make:
// single-hop BFD control packets must arrive with TTL (hop limit) 255, so a
// packet that crossed a router (TTL ≤ 254), i.e. one spoofed from off the
// link, never reaches the BFD listener. An inet-family table of its own:
//
//	table inet netbridge_bfd {
//	  chain input { type filter hook input priority filter; policy accept;
//	    meta nfproto ipv4 udp dport 3784 ip ttl != 255 counter drop
//	    meta nfproto ipv6 udp dport 3784 ip6 hoplimit != 255 counter drop } }
type BFDGuard struct {
	mu    sync.Mutex
	conn  *nftables.Conn
	table *nftables.Table
	chain *nftables.Chain
}

// BFDGuardTable is the nftables table the guard owns.
const BFDGuardTable = "netbridge_bfd"

// bfdControlPort is RFC 5881's single-hop BFD control port.
const bfdControlPort = 3784

// NewBFDGuard installs the guard in the current namespace. A table left by
// a previous run is replaced in the same transaction: there is no moment
// without the check.
func NewBFDGuard() (*BFDGuard, error) { return newBFDGuard(nftables.AsLasting()) }

// NewBFDGuardIn is NewBFDGuard in another network namespace. The connection
// is opened once (ns may be closed afterwards); Close releases it.
func NewBFDGuardIn(ns netns.NsHandle) (*BFDGuard, error) {
	return newBFDGuard(nftables.WithNetNSFd(int(ns)), nftables.AsLasting())
}

func newBFDGuard(opts ...nftables.ConnOption) (*BFDGuard, error) {
	conn, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("bfd guard: nftables: %w", err)
	}
	g := &BFDGuard{conn: conn, table: &nftables.Table{Name: BFDGuardTable, Family: nftables.TableFamilyINet}}
	if err := g.install(); err != nil {
		_ = conn.CloseLasting()
		return nil, err
	}
	return g, nil
}

func (g *BFDGuard) install() error {
	tables, err := g.conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("bfd guard: list inet tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == BFDGuardTable {
			g.conn.DelTable(g.table) // same transaction as the new table
		}
	}
	g.conn.AddTable(g.table)
	policy := nftables.ChainPolicyAccept
	g.chain = g.conn.AddChain(&nftables.Chain{Name: "input", Table: g.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &policy})
	for _, f := range []struct {
		nfproto byte
		offset  uint32 // of the TTL / hop limit in the IP header
	}{{unix.NFPROTO_IPV4, 8}, {unix.NFPROTO_IPV6, 7}} {
		g.conn.AddRule(&nftables.Rule{Table: g.table, Chain: g.chain, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{f.nfproto}},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(bfdControlPort)},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: f.offset, Len: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{255}},
			&expr.Counter{},
			&expr.Verdict{Kind: expr.VerdictDrop},
		}})
	}
	if err := g.conn.Flush(); err != nil {
		return fmt.Errorf("bfd guard: install table %s: %w", BFDGuardTable, err)
	}
	return nil
}

// Dropped returns how many BFD control packets the guard dropped (TTL or
// hop limit not 255) since it was installed.
func (g *BFDGuard) Dropped() (uint64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	rules, err := g.conn.GetRules(g.table, g.chain)
	if err != nil {
		return 0, fmt.Errorf("bfd guard: list rules: %w", err)
	}
	var n uint64
	for _, r := range rules {
		for _, e := range r.Exprs {
			if c, ok := e.(*expr.Counter); ok {
				n += c.Packets
			}
		}
	}
	return n, nil
}

// Remove deletes the guard's table (BFD is no longer used).
func (g *BFDGuard) Remove() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.conn.DelTable(g.table)
	if err := g.conn.Flush(); err != nil {
		return fmt.Errorf("bfd guard: remove table: %w", err)
	}
	return nil
}

// Close releases the netlink connection; the kernel table stays.
func (g *BFDGuard) Close() error { return g.conn.CloseLasting() }
