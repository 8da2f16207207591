package labnet

import (
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Faults as they happen (TESTBED.md): a node losing power has every link
// down at the same moment; a partition drops packets between two parties
// only, so requests hang instead of being refused.

// LinksDown sets every link of role's namespace but lo down in one `ip
// -batch` run (one process, back-to-back netlink requests).
func (l *Lab) LinksDown(role string) error {
	out, err := exec.Command("ip", "-n", l.NS(role), "-o", "link", "show").Output()
	if err != nil {
		return fmt.Errorf("list links of %s: %w", role, err)
	}
	var batch strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name := strings.TrimSuffix(f[1], ":")
		if i := strings.IndexByte(name, '@'); i >= 0 {
			name = name[:i]
		}
		if name != "lo" {
			fmt.Fprintf(&batch, "link set dev %s down\n", name)
		}
	}
	cmd := exec.Command("ip", "-n", l.NS(role), "-batch", "-")
	cmd.Stdin = strings.NewReader(batch.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("links of %s down: %w: %s", role, err, out)
	}
	return nil
}

// DropTo drops, in role's namespace, every packet sent to dst:port (TCP):
// its connections there hang. The returned func removes the rule.
func (l *Lab) DropTo(role string, dst netip.AddrPort) (undo func() error, err error) {
	port := []byte{byte(dst.Port() >> 8), byte(dst.Port())}
	return l.drop(role, "lab_drop", nftables.ChainHookOutput, append(addrIs(16, dst.Addr()),
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: port},
		&expr.Verdict{Kind: expr.VerdictDrop},
	))
}

// addrIs matches IPv4 packets whose source (offset 12) or destination
// (offset 16) address is a.
func addrIs(offset uint32, a netip.Addr) []expr.Any {
	a4 := a.As4()
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a4[:]},
	}
}

// drop adds one rule (exprs, ending in a verdict) to a chain on hook in a
// table of its own in role's namespace (one table per kind of fault, so
// two faults can overlap); undo removes the table.
func (l *Lab) drop(role, tableName string, hook *nftables.ChainHook, exprs []expr.Any) (undo func() error, err error) {
	ns, err := netns.GetFromName(l.NS(role))
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w", l.NS(role), err)
	}
	// The namespace fd stays open until undo: the connection dials in
	// it at every Flush.
	conn, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("nftables in %s: %w", role, err)
	}
	table := &nftables.Table{Name: tableName, Family: nftables.TableFamilyIPv4}
	conn.AddTable(table)
	policy := nftables.ChainPolicyAccept
	chain := conn.AddChain(&nftables.Chain{Name: "drop", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: hook, Priority: nftables.ChainPriorityFilter, Policy: &policy})
	conn.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: exprs})
	if err := conn.Flush(); err != nil {
		ns.Close()
		return nil, fmt.Errorf("nftables drop rule in %s: %w", role, err)
	}
	return func() error {
		defer ns.Close()
		conn.DelTable(table)
		if err := conn.Flush(); err != nil {
			return fmt.Errorf("remove drop rule in %s: %w", role, err)
		}
		return nil
	}, nil
}

// Cut partitions two hosts of the lab from each other: each drops, on
// input, every IPv4 packet from the other's fabric address (peer channel,
// VXLAN, anything) — silently, as a network would: a drop on output would
// fail the sender's send — while both keep every other party. The
// returned func heals it.
func (l *Lab) Cut(a, b Host) (heal func() error, err error) {
	var undos []func() error
	heal = func() error {
		var errs []error
		for _, u := range undos {
			errs = append(errs, u())
		}
		return errors.Join(errs...)
	}
	for _, p := range [][2]Host{{a, b}, {b, a}} {
		src, err := netip.ParseAddr(p[1].FabricIP)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("fabric address of %s: %w", p[1].Name, err), heal())
		}
		undo, err := l.drop(p[0].Name, "lab_cut", nftables.ChainHookInput, append(addrIs(12, src), &expr.Verdict{Kind: expr.VerdictDrop}))
		if err != nil {
			return nil, errors.Join(err, heal())
		}
		undos = append(undos, undo)
	}
	return heal, nil
}
