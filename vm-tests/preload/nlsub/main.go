// nlsub: a cgo-linked Go test program built from Debian's
// vishvananda/netlink, used by the preload vm-tests and benchmark.
//
//	nlsub subscribe [-n N]   subscribe with ListExisting, create a veth pair
//	                         through a child `ip` process, bring it up, change
//	                         its MTU N times, report event latencies
//	nlsub subscribe-ns NS     subscribe inside named netns NS, wait for a
//	                         link created there (moby's waitForIfUpped)
//	nlsub sigsys             check SIGSYS still reaches the program's handler
//	nlsub setuid             setuid() while a subscription reader is blocked
//	nlsub requests           neighbour add/dump and bridge hairpin via netlink
//	nlsub plain              try a plain LinkSubscribe, print the outcome
//	nlsub bench [-n N]       ns per getppid and per netlink setsockopt
//	nlsub children           spawn children (itself in "plain" mode, and a
//	                         shell printing LD_PRELOAD) and report on them
//	nlsub bench-fds -n N K   ns per getppid and per 4 KiB read after K link
//	                         subscriptions on K distinct fd numbers (each
//	                         degraded one adds a read filter inside gVisor)
//	nlsub churn -n K         moby >= 28's pattern, K times, each on another fd
//	                         number: subscribe (ListExisting), wait for a new
//	                         link's event, close; report leaked descriptors
//	nlsub maps-probe         how many mappings of the preload this program,
//	                         a child (grep) and a grandchild (sh -> grep) have
//	nlsub announce IF IP4 IP6  send an unsolicited ARP and an unsolicited
//	                         neighbour advertisement for IF the way moby >= 28
//	                         does (libnetwork/internal/l2disco), print errors
package main

// #include <stdlib.h>
import "C"

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func fail(format string, a ...interface{}) {
	fmt.Printf("FAIL "+format+"\n", a...)
	os.Exit(1)
}

func subscribe(n int) {
	ch := make(chan netlink.LinkUpdate, 1024)
	done := make(chan struct{})
	defer close(done)
	errs := make(chan error, 16)
	err := netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{
		ListExisting: true,
		ErrorCallback: func(e error) {
			select {
			case errs <- e:
			default:
			}
		},
	})
	if err != nil {
		fail("subscribe: %v", err)
	}
	// Existing links arrive first; lo must be among them.
	existing := 0
	sawLo := false
	deadline := time.After(3 * time.Second)
	for !sawLo {
		select {
		case u := <-ch:
			existing++
			if u.Attrs().Name == "lo" {
				sawLo = true
			}
		case e := <-errs:
			fail("error callback: %v", e)
		case <-deadline:
			fail("existing links not listed (got %d)", existing)
		}
	}
	a, b := fmt.Sprintf("nlsA%d", os.Getpid()%10000), fmt.Sprintf("nlsB%d", os.Getpid()%10000)
	// Child process (test 5): ordinary `ip` started by the preloaded program.
	out, err := exec.Command("ip", "link", "add", a, "type", "veth", "peer", "name", b).CombinedOutput()
	if err != nil {
		fail("child ip link add: %v: %s", err, strings.TrimSpace(string(out)))
	}
	defer exec.Command("ip", "link", "del", a).Run()
	link, err := netlink.LinkByName(a)
	if err != nil {
		fail("LinkByName: %v", err)
	}
	// The "up" wait of moby's waitForIfUpped. (In gVisor a new veth is
	// already up, so the creation event may be the one that satisfies it.)
	t0 := time.Now()
	if err = netlink.LinkSetUp(link); err != nil {
		fail("LinkSetUp: %v", err)
	}
	upLat := time.Duration(-1)
	timeout := time.After(2 * time.Second)
	for upLat < 0 {
		select {
		case u := <-ch:
			if u.Attrs().Name == a && u.Attrs().Flags&1 != 0 {
				upLat = time.Since(t0)
			}
		case e := <-errs:
			fail("error callback: %v", e)
		case <-timeout:
			fail("no up event for %s within 2s", a)
		}
	}
	// Latency samples: MTU changes (gVisor does not model link down).
	var lat []time.Duration
	badHdr := 0
	for i := 0; i < n; i++ {
		mtu := 1400 + (i%2)*50
		t0 := time.Now()
		if err = netlink.LinkSetMTU(link, mtu); err != nil {
			fail("LinkSetMTU: %v", err)
		}
		got := false
		timeout := time.After(2 * time.Second)
		for !got {
			select {
			case u := <-ch:
				// gVisor reports MTU minus the 14-byte Ethernet header.
				if u.Attrs().Name == a && (u.Attrs().MTU == mtu || u.Attrs().MTU == mtu-14) {
					// a notification carries sequence 0 and port id 0
					if u.Header.Seq != 0 || u.Header.Pid != 0 {
						badHdr++
					}
					lat = append(lat, time.Since(t0))
					got = true
				}
			case e := <-errs:
				fail("error callback: %v", e)
			case <-timeout:
				fail("no event for %s mtu=%d within 2s", a, mtu)
			}
		}
	}
	if len(lat) == 0 {
		lat = append(lat, upLat)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p := func(q float64) float64 {
		return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000
	}
	if badHdr > 0 {
		fail("%d events did not carry sequence 0 / port id 0", badHdr)
	}
	fmt.Printf("ok existing=%d up_ms=%.2f samples=%d p50_ms=%.2f p99_ms=%.2f max_ms=%.2f\n",
		existing, float64(upLat.Microseconds())/1000, len(lat), p(0.5), p(0.99), p(1.0))
}

// subscribeNs: moby >= 28's waitForIfUpped pattern: subscribe inside another
// network namespace (by handle), then wait for a link created there.
func subscribeNs(name string) {
	ns, err := netns.GetFromName(name)
	if err != nil {
		fail("netns %s: %v", name, err)
	}
	defer ns.Close()
	ch := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	err = netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{Namespace: &ns, ListExisting: true})
	if err != nil {
		fail("subscribe in %s: %v", name, err)
	}
	t0 := time.Now()
	out, err := exec.Command("ip", "-n", name, "link", "add", "nsv0", "type", "veth", "peer", "name", "nsv1").CombinedOutput()
	if err != nil {
		fail("ip -n %s link add: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	timeout := time.After(3 * time.Second)
	for {
		select {
		case u := <-ch:
			if u.Attrs().Name == "nsv0" {
				fmt.Printf("ok ns-event_ms=%.2f\n", float64(time.Since(t0).Microseconds())/1000)
				return
			}
		case <-timeout:
			fail("no event for nsv0 in namespace %s within 3s", name)
		}
	}
}

// sigsys: a SIGSYS that did not come from the preload's filter must still
// reach the program's own handler (here: Go's, via signal.Notify).
func sigsys() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGSYS)
	syscall.Kill(os.Getpid(), syscall.SIGSYS)
	select {
	case <-c:
		fmt.Println("ok sigsys delivered to the program's handler")
	case <-time.After(3 * time.Second):
		fail("SIGSYS not delivered to the program's handler")
	}
}

// setuidSubscribed: glibc's setuid (used by cgo programs) signals every
// thread and waits for each; one of them is blocked reading the
// subscription socket (inside the preload's SIGSYS handler in gVisor).
func setuidSubscribed() {
	ch := make(chan netlink.LinkUpdate, 16)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.LinkSubscribe(ch, done); err != nil {
		fail("subscribe: %v", err)
	}
	time.Sleep(300 * time.Millisecond) // let the reader block
	res := make(chan error, 1)
	go func() { res <- syscall.Setuid(os.Getuid()) }()
	select {
	case err := <-res:
		if err != nil {
			fail("setuid: %v", err)
		}
		fmt.Println("ok setuid completed while a subscription reader was blocked")
	case <-time.After(5 * time.Second):
		fail("setuid hung while a subscription reader was blocked")
	}
}

// requests: neighbour add, neighbour dump and bridge-port hairpin through
// vishvananda/netlink (raw syscalls: the SIGSYS path of the preload).
func requests() {
	a, b, br := fmt.Sprintf("rqA%d", os.Getpid()%10000), fmt.Sprintf("rqB%d", os.Getpid()%10000), fmt.Sprintf("rqBr%d", os.Getpid()%10000)
	for _, args := range [][]string{
		{"link", "add", a, "type", "veth", "peer", "name", b},
		{"link", "add", br, "type", "bridge"},
		{"link", "set", a, "master", br},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			fail("ip %v: %v: %s", args, err, strings.TrimSpace(string(out)))
		}
	}
	defer exec.Command("ip", "link", "del", br).Run()
	defer exec.Command("ip", "link", "del", a).Run()
	link, err := netlink.LinkByName(a)
	if err != nil {
		fail("LinkByName: %v", err)
	}
	res := []string{}
	err = netlink.NeighSet(&netlink.Neigh{LinkIndex: link.Attrs().Index, Family: netlink.FAMILY_V4,
		State: netlink.NUD_PERMANENT, IP: net.ParseIP("10.66.0.2"), HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 2}})
	res = append(res, fmt.Sprintf("neigh-set=%v", err))
	_, err = netlink.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
	res = append(res, fmt.Sprintf("neigh-list=%v", err))
	err = netlink.LinkSetHairpin(link, true)
	res = append(res, fmt.Sprintf("hairpin=%v", err))
	fmt.Println(strings.Join(res, " "))
}

func plain() {
	ch := make(chan netlink.LinkUpdate)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.LinkSubscribe(ch, done); err != nil {
		fmt.Printf("plain: error: %v\n", err)
		return
	}
	fmt.Printf("plain: ok\n")
}

func children() {
	self, _ := os.Executable()
	out, err := exec.Command(self, "plain").CombinedOutput()
	fmt.Printf("child-go: %s (exit: %v)\n", strings.TrimSpace(string(out)), err)
	out, err = exec.Command("sh", "-c", "echo \"LD_PRELOAD=[$LD_PRELOAD]\"; ip -o link show lo >/dev/null && echo ip-ok").CombinedOutput()
	fmt.Printf("child-sh: %s (exit: %v)\n", strings.ReplaceAll(strings.TrimSpace(string(out)), "\n", " "), err)
}

// benchFds: the cost of the per-fd read filters a long-running program
// accumulates (one per distinct fd number of a degraded subscription).
func benchFds(n, k int) {
	runtime.LockOSThread()
	var keep []int
	for i := 0; i < k; i++ {
		ch := make(chan netlink.LinkUpdate, 16)
		if err := netlink.LinkSubscribe(ch, make(chan struct{})); err != nil {
			fail("subscribe %d: %v", i, err)
		}
		// a spare fd so that the next subscription gets another number
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
		if err != nil {
			fail("socket: %v", err)
		}
		keep = append(keep, fd)
	}
	t := time.Now()
	for i := 0; i < n; i++ {
		syscall.RawSyscall(syscall.SYS_GETPPID, 0, 0, 0)
	}
	ppid := float64(time.Since(t).Nanoseconds()) / float64(n)
	zero, err := os.Open("/dev/zero")
	if err != nil {
		fail("open /dev/zero: %v", err)
	}
	zb := make([]byte, 4096)
	t = time.Now()
	for i := 0; i < n/4; i++ {
		syscall.Read(int(zero.Fd()), zb)
	}
	rd := float64(time.Since(t).Nanoseconds()) / float64(n/4)
	fmt.Printf("subscriptions=%d getppid_ns=%.1f read4k_ns=%.1f\n", k, ppid, rd)
	_ = keep
}

func countFds() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		fail("read /proc/self/fd: %v", err)
	}
	return len(ents)
}

// churn: a long-running dockerd >= 28 subscribes to link events for every
// interface it brings up and closes the subscription once the link is up,
// on whatever fd number is free; with containers coming and going those
// numbers keep changing. Every subscription must still see its link, its
// reader must end once it is closed, and nothing the preload keeps for
// them may outlive them.
//
// vishvananda/netlink's subscription reader loads the socket's fd number
// and then calls recvfrom on it; closed in between, the number can be
// reused by the next socket the program opens, and the old reader steals
// that socket's messages (seen on a plain kernel: a request's ack taken,
// LinkAdd waiting forever). So requests go through one Handle opened
// before the churn, and each subscription's reader is seen to end (woken
// by link events on a spare bridge) before the next descriptor is opened.
func churn(k int) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		fail("netlink handle: %v", err)
	}
	defer h.Close()
	waker := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("cw%d", os.Getpid()%100000)}}
	if err := h.LinkAdd(waker); err != nil {
		fail("add %s: %v", waker.Name, err)
	}
	defer h.LinkDel(waker)
	base := countFds()
	var spares []int
	for i := 0; i < k; i++ {
		ch := make(chan netlink.LinkUpdate, 256)
		done := make(chan struct{})
		err := netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{ListExisting: true})
		if err != nil {
			fail("subscribe %d: %v", i, err)
		}
		name := fmt.Sprintf("ch%d_%d", os.Getpid()%1000, i)
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
		if err := h.LinkAdd(br); err != nil {
			fail("add %s: %v", name, err)
		}
		timeout := time.After(3 * time.Second)
		for got := false; !got; {
			select {
			case u, ok := <-ch:
				if !ok {
					fail("subscription %d ended early", i)
				}
				got = u.Attrs().Name == name
			case <-timeout:
				fail("subscription %d: no event for %s within 3s", i, name)
			}
		}
		h.LinkDel(br)
		close(done)
		awaitReaderEnd(h, waker, ch, i)
		// a spare descriptor, so that the next subscription gets another number
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			fail("socket: %v", err)
		}
		spares = append(spares, fd)
	}
	for _, fd := range spares {
		unix.Close(fd)
	}
	// the preload reaps closed sockets within a poll period or two
	leaked := 0
	for t := 0; t < 20; t++ {
		time.Sleep(50 * time.Millisecond)
		if leaked = countFds() - base; leaked <= 0 {
			break
		}
	}
	fmt.Printf("ok subscriptions=%d leaked_fds=%d\n", k, leaked)
}

// awaitReaderEnd drains a closed subscription until its reader ends (its
// channel closes). A reader blocked in recvfrom on the closed socket wakes
// only with a message, so the waker bridge is flipped up and down meanwhile.
func awaitReaderEnd(h *netlink.Handle, waker netlink.Link, ch <-chan netlink.LinkUpdate, i int) {
	deadline := time.After(3 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	up := false
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-tick.C:
			if up = !up; up {
				h.LinkSetUp(waker)
			} else {
				h.LinkSetDown(waker)
			}
		case <-deadline:
			fail("subscription %d: its reader did not end within 3s of closing", i)
		}
	}
}

// mapsProbe: the Go parent of the "children of hosts" test: does the
// preload reach a child or a grandchild of a preloaded Go program?
func mapsProbe() {
	const lib = "libconductor_preload"
	self, _ := os.ReadFile("/proc/self/maps")
	child, _ := exec.Command("grep", "-c", lib, "/proc/self/maps").Output()
	grand, _ := exec.Command("sh", "-c", "grep -c "+lib+" /proc/self/maps; :").Output()
	fmt.Printf("self=%d child=%s grandchild=%s\n", strings.Count(string(self), lib),
		strings.TrimSpace(string(child)), strings.TrimSpace(string(grand)))
}

// bench: ns per unrelated syscall (getppid) and per netlink setsockopt,
// which the preload traps (SOL_NETLINK) and passes through.
func bench(n int) {
	runtime.LockOSThread()
	t := time.Now()
	for i := 0; i < n; i++ {
		syscall.RawSyscall(syscall.SYS_GETPPID, 0, 0, 0)
	}
	ppid := float64(time.Since(t).Nanoseconds()) / float64(n)
	zero, err := os.Open("/dev/zero")
	if err != nil {
		fail("open /dev/zero: %v", err)
	}
	zb := make([]byte, 4096)
	t = time.Now()
	for i := 0; i < n/4; i++ {
		syscall.Read(int(zero.Fd()), zb)
	}
	rd := float64(time.Since(t).Nanoseconds()) / float64(n/4)
	zero.Close()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE)
	if err != nil {
		fail("socket: %v", err)
	}
	defer unix.Close(fd)
	m := n / 20
	if m < 100 {
		m = 100
	}
	t = time.Now()
	for i := 0; i < m; i++ {
		// gVisor supports no SOL_NETLINK option (ENOPROTOOPT); the call
		// is trapped and passed through all the same.
		unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1)
	}
	sso := float64(time.Since(t).Nanoseconds()) / float64(m)
	// The same unrelated syscall while a link subscription is open (inside
	// gVisor the preload then has an extra per-fd read filter installed).
	ch := make(chan netlink.LinkUpdate, 16)
	done := make(chan struct{})
	sub := "n/a"
	if err := netlink.LinkSubscribe(ch, done); err == nil {
		t = time.Now()
		for i := 0; i < n; i++ {
			syscall.RawSyscall(syscall.SYS_GETPPID, 0, 0, 0)
		}
		sub = fmt.Sprintf("%.1f", float64(time.Since(t).Nanoseconds())/float64(n))
		close(done)
	}
	fmt.Printf("getppid_ns=%.1f read4k_ns=%.1f netlink_setsockopt_ns=%.1f getppid_subscribed_ns=%s\n", ppid, rd, sso, sub)
}

// announce: moby >= 28 announces every address it puts in a container: an
// unsolicited ARP written on an AF_PACKET/SOCK_DGRAM socket with sendto to
// a sockaddr_ll, and an unsolicited neighbour advertisement sent with
// sendmsg (hop limit and source in control messages) on a raw ICMPv6 socket
// bound to ::1. Same system calls, same arguments.
func announce(ifname, ip4, ip6 string) {
	link, err := netlink.LinkByName(ifname)
	if err != nil {
		fail("LinkByName %s: %v", ifname, err)
	}
	mac := link.Attrs().HardwareAddr
	idx := link.Attrs().Index
	res := []string{}
	sd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		res = append(res, fmt.Sprintf("arp-socket=%v", err))
	} else {
		ip := net.ParseIP(ip4).To4()
		pkt := []byte{0, 1, 8, 0, 6, 4, 0, 1}
		pkt = append(pkt, mac...)
		pkt = append(pkt, ip...)
		pkt = append(pkt, 0, 0, 0, 0, 0, 0)
		pkt = append(pkt, ip...)
		sa := &unix.SockaddrLinklayer{Protocol: 0x0608, Ifindex: idx, Hatype: unix.ARPHRD_ETHER, Halen: 6}
		copy(sa.Addr[:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		res = append(res, fmt.Sprintf("arp=%v", unix.Sendto(sd, pkt, 0, sa)))
		// a resolution request (target differs) is not an announcement:
		// the preload must leave its outcome alone
		other := append([]byte{}, pkt...)
		other[27]++
		res = append(res, fmt.Sprintf("arp-request=%v", unix.Sendto(sd, other, 0, sa)))
		unix.Close(sd)
	}
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
	if err != nil {
		res = append(res, fmt.Sprintf("na-socket=%v", err))
	} else {
		defer unix.Close(fd)
		_ = unix.Bind(fd, &unix.SockaddrInet6{Addr: [16]byte{15: 1}})
		src := net.ParseIP(ip6).To16()
		na := []byte{136, 0, 0, 0, 0x20, 0, 0, 0}
		na = append(na, src...)
		na = append(na, 2, 1)
		na = append(na, mac...)
		oob := make([]byte, unix.CmsgSpace(4)+unix.CmsgSpace(20))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_HOPLIMIT
		h.SetLen(unix.CmsgLen(4))
		*(*int32)(unsafe.Pointer(&oob[unix.CmsgLen(0)])) = 255
		h2 := (*unix.Cmsghdr)(unsafe.Pointer(&oob[unix.CmsgSpace(4)]))
		h2.Level, h2.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
		h2.SetLen(unix.CmsgLen(20))
		pi := oob[unix.CmsgSpace(4)+unix.CmsgLen(0):]
		copy(pi[:16], src)
		*(*uint32)(unsafe.Pointer(&pi[16])) = uint32(idx)
		dst := &unix.SockaddrInet6{Addr: [16]byte{0: 0xff, 1: 2, 15: 1}}
		_, err = unix.SendmsgN(fd, na, oob, dst, 0)
		res = append(res, fmt.Sprintf("na=%v", err))
	}
	fmt.Println(strings.Join(res, " "))
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: nlsub subscribe [-n N] | plain | children")
	}
	switch os.Args[1] {
	case "subscribe":
		n := 1
		if len(os.Args) >= 4 && os.Args[2] == "-n" {
			n, _ = strconv.Atoi(os.Args[3])
		}
		subscribe(n)
	case "plain":
		plain()
	case "sigsys":
		sigsys()
	case "requests":
		requests()
	case "setuid":
		setuidSubscribed()
	case "subscribe-ns":
		if len(os.Args) < 3 {
			fail("usage: nlsub subscribe-ns NETNS")
		}
		subscribeNs(os.Args[2])
	case "bench":
		n := 2000000
		if len(os.Args) >= 4 && os.Args[2] == "-n" {
			n, _ = strconv.Atoi(os.Args[3])
		}
		bench(n)
	case "children":
		children()
	case "bench-fds":
		if len(os.Args) < 5 || os.Args[2] != "-n" {
			fail("usage: nlsub bench-fds -n N K")
		}
		n, _ := strconv.Atoi(os.Args[3])
		k, _ := strconv.Atoi(os.Args[4])
		benchFds(n, k)
	case "churn":
		if len(os.Args) < 4 || os.Args[2] != "-n" {
			fail("usage: nlsub churn -n K")
		}
		k, _ := strconv.Atoi(os.Args[3])
		churn(k)
	case "maps-probe":
		mapsProbe()
	case "announce":
		if len(os.Args) < 5 {
			fail("usage: nlsub announce IFNAME IPV4 IPV6")
		}
		announce(os.Args[2], os.Args[3], os.Args[4])
	default:
		fail("unknown mode %s", os.Args[1])
	}
}
