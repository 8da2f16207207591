package vlan

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
)

// TagGuard keeps stacked VLAN tags out of the segments. The 802.1Q
// sub-interface strips only the outer tag: a 0x8100-in-0x8100 (or an
// 802.1ad-in-0x8100) frame arriving on the trunk would enter the segment
// bridge still tagged and reach the VMs (and a VM's tagged frame would
// leave as a double-tagged one). A bridge-family table of its own drops a
// frame crossing a sub-interface ("nb-vl-*") that still carries a tag; the
// link-layer payload at offset 12 includes a tag the kernel has already
// moved out of the packet data:
//
//	table bridge netbridge_tags {
//	  chain forward { type filter hook forward priority filter; policy accept;
//	    iifname "nb-vl-*" ether type { 8021q, 8021ad } counter drop
//	    oifname "nb-vl-*" ether type { 8021q, 8021ad } counter drop } }
type TagGuard struct {
	conn  *nftables.Conn
	table *nftables.Table
}

// TagGuardTable is the nftables table the tag guard owns.
const TagGuardTable = "netbridge_tags"

// NewTagGuard installs the guard in the current namespace, replacing a
// table left by a previous run in the same transaction.
func NewTagGuard() (*TagGuard, error) { return newTagGuard(nftables.AsLasting()) }

// NewTagGuardIn is NewTagGuard in another network namespace.
func NewTagGuardIn(ns netns.NsHandle) (*TagGuard, error) {
	return newTagGuard(nftables.WithNetNSFd(int(ns)), nftables.AsLasting())
}

func newTagGuard(opts ...nftables.ConnOption) (*TagGuard, error) {
	conn, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("tag guard: nftables: %w", err)
	}
	g := &TagGuard{conn: conn, table: &nftables.Table{Name: TagGuardTable, Family: nftables.TableFamilyBridge}}
	if err := g.install(); err != nil {
		_ = conn.CloseLasting()
		return nil, err
	}
	return g, nil
}

func (g *TagGuard) install() error {
	tables, err := g.conn.ListTablesOfFamily(nftables.TableFamilyBridge)
	if err != nil {
		return fmt.Errorf("tag guard: list bridge tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == TagGuardTable {
			g.conn.DelTable(g.table)
		}
	}
	g.conn.AddTable(g.table)
	policy := nftables.ChainPolicyAccept
	chain := g.conn.AddChain(&nftables.Chain{Name: "forward", Table: g.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &policy})
	for _, key := range []expr.MetaKey{expr.MetaKeyIIFNAME, expr.MetaKeyOIFNAME} {
		for _, tpid := range []uint16{0x8100, 0x88a8} {
			g.conn.AddRule(&nftables.Rule{Table: g.table, Chain: chain, Exprs: []expr.Any{
				&expr.Meta{Key: key, Register: 1},
				// A prefix match: only the first len(vlanPrefix) bytes.
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(vlanPrefix)},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(tpid)},
				&expr.Counter{},
				&expr.Verdict{Kind: expr.VerdictDrop},
			}})
		}
	}
	if err := g.conn.Flush(); err != nil {
		return fmt.Errorf("tag guard: install table %s: %w", TagGuardTable, err)
	}
	return nil
}

// Close releases the netlink connection; the kernel table stays (it only
// ever drops frames that must not cross).
func (g *TagGuard) Close() error { return g.conn.CloseLasting() }
