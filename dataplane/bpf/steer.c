// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Sluice's XDP program for the uplink: steer to the AF_XDP socket of the
// receive queue only what Sluice owns, pass everything else to the kernel.
//
// Sluice owns, for IPv4 packets addressed to the node IP:
//   - VXLAN: UDP to the configured port;
//   - replies to masqueraded flows: TCP/UDP to a port in the SNAT range,
//     ICMP echo replies with an identifier in the SNAT identifier range;
//   - ICMP errors quoting a packet Sluice sent (quoted source = node IP and
//     quoted source port / identifier in those ranges);
// and, to any IPv4 address, TCP/UDP to a service frontend in the
// `frontends` map (NodePorts on the node IP, externalIPs, LoadBalancer
// IPs: filled only when Sluice serves NodePorts, `services.node_ports`).
// Fragments, ARP, IPv6, SSH, kubelet and the rest go to the kernel.
// On a pod's veth (config `all`), every frame is Sluice's. What Sluice
// owns is dropped while no socket is bound (see `steer`).
//
// The same choice, made at the uplink's TCX ingress instead (program
// sluice_to_tap), redirects Sluice's packets to the offload uplink's TAP
// whole: a peer's GSO super-packet stays one packet (an XDP program on a
// veth makes its peer segment everything before sending), and its
// checksum state travels in the TAP's virtio-net header.
//
// Built by dataplane/build.rs with clang -target bpf; helpers are declared
// here so that only the kernel's UAPI headers are needed.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <linux/tcp.h>

// linux/icmp.h pulls in libc headers through linux/if.h: declared here.
#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11
struct icmphdr {
	__u8 type;
	__u8 code;
	__u16 checksum;
	union {
		struct {
			__u16 id;
			__u16 sequence;
		} echo;
		__u32 gateway;
	} un;
};

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_redirect_map)(void *map, __u64 key, __u64 flags) = (void *)51;
static long (*bpf_redirect)(__u32 ifindex, __u64 flags) = (void *)23;
static long (*bpf_skb_pull_data)(struct __sk_buff *skb, __u32 len) = (void *)39;

// TCX verdicts (linux/bpf.h, Linux 6.6).
#define SLUICE_TCX_PASS 0
#define SLUICE_TCX_DROP 2

struct steer_config {
	__u32 node_ip;      // network order
	__u16 vxlan_port;   // network order
	__u16 port_min;     // host order: SNAT TCP/UDP ports
	__u16 port_max;
	__u16 ident_min;    // host order: SNAT ICMP identifiers
	__u16 ident_max;
	__u16 all;          // 1: redirect every frame (a pod's veth)
	__u16 pad;
	__u32 tap_ifindex;  // the offload uplink's TAP (sluice_to_tap), 0: none
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct steer_config);
} config SEC(".maps");

// A service frontend: address and port in network order.
struct frontend_key {
	__u32 addr;
	__u16 port;
	__u8 proto;
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct frontend_key);
	__type(value, __u8);
} frontends SEC(".maps");

static __attribute__((always_inline)) int in_range(__u16 v, __u16 lo, __u16 hi)
{
	return v >= lo && v <= hi;
}

// Whether the transport header at l4 (protocol proto) is addressed to a
// SNAT port; `dst` selects the destination (reply) or source (quoted) side.
static __attribute__((always_inline)) int
snat_port(void *l4, void *end, __u8 proto, int dst, struct steer_config *c)
{
	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
		__u16 *ports = l4;
		if ((void *)(ports + 2) > end)
			return 0;
		__u16 p = __builtin_bswap16(dst ? ports[1] : ports[0]);
		return in_range(p, c->port_min, c->port_max);
	}
	if (proto == IPPROTO_ICMP) {
		struct icmphdr *ic = l4;
		if ((void *)(ic + 1) > end)
			return 0;
		if (dst && ic->type != ICMP_ECHOREPLY)
			return 0;
		if (!dst && ic->type != ICMP_ECHO)
			return 0;
		return in_range(__builtin_bswap16(ic->un.echo.id), c->ident_min, c->ident_max);
	}
	return 0;
}

// What Sluice owns goes to the queue's socket. With no socket there (the
// daemon restarting: the old one's sockets closed, the new one's not yet
// bound) it is dropped, not passed: the kernel has no state for these
// flows and would answer a masqueraded connection's reply with a RST,
// killing a transfer that the next daemon would have carried on. TCP
// retransmits what the gap dropped.
static __attribute__((always_inline)) int steer(struct xdp_md *ctx)
{
	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_DROP);
}

// Whether the frame in [data, end) is Sluice's (see the top).
static __attribute__((always_inline)) int owned(void *data, void *end, struct steer_config *c)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != __builtin_bswap16(ETH_P_IP))
		return 0;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl < 5)
		return 0;
	// Fragments: the kernel reassembles them.
	if (ip->frag_off & __builtin_bswap16(0x3fff))
		return 0;
	void *l4 = (void *)ip + ip->ihl * 4;
	if (l4 > end)
		return 0;
	if (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP) {
		__u16 *ports = l4;
		if ((void *)(ports + 2) > end)
			return 0;
		struct frontend_key k = {
			.addr = ip->daddr,
			.port = ports[1],
			.proto = ip->protocol,
			.pad = 0,
		};
		if (bpf_map_lookup_elem(&frontends, &k))
			return 1;
	}
	if (ip->daddr != c->node_ip)
		return 0;

	if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *u = l4;
		if ((void *)(u + 1) > end)
			return 0;
		if (u->dest == c->vxlan_port)
			return 1;
	}
	if (snat_port(l4, end, ip->protocol, 1, c))
		return 1;
	if (ip->protocol == IPPROTO_ICMP) {
		struct icmphdr *ic = l4;
		if ((void *)(ic + 1) > end)
			return 0;
		if (ic->type == ICMP_DEST_UNREACH || ic->type == ICMP_TIME_EXCEEDED) {
			struct iphdr *q = (void *)(ic + 1);
			if ((void *)(q + 1) > end || q->ihl < 5 || q->saddr != c->node_ip)
				return 0;
			void *ql4 = (void *)q + q->ihl * 4;
			if (ql4 > end)
				return 0;
			return snat_port(ql4, end, q->protocol, 0, c);
		}
	}
	return 0;
}

SEC("xdp")
int sluice_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct steer_config *c = bpf_map_lookup_elem(&config, &zero);
	if (!c)
		return XDP_PASS;
	if (c->all || owned(data, end, c))
		return steer(ctx);
	return XDP_PASS;
}

// Headers the choice reads (Ethernet, IP with options, an ICMP error's
// quoted IP and ports), made linear if the packet arrived in pieces.
#define PULL 128

SEC("tcx/ingress")
int sluice_to_tap(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct steer_config *c = bpf_map_lookup_elem(&config, &zero);
	if (!c)
		return SLUICE_TCX_PASS;
	__u32 want = skb->len < PULL ? skb->len : PULL;
	if (skb->data_end - skb->data < want)
		bpf_skb_pull_data(skb, want);
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if (!owned(data, end, c))
		return SLUICE_TCX_PASS;
	// To the TAP's transmit side: the daemon reads it. With no TAP yet
	// (a new daemon between attaching and opening it), or a TAP gone with
	// the daemon that made it, what Sluice owns is dropped, never passed
	// to the kernel (see `steer`).
	if (!c->tap_ifindex)
		return SLUICE_TCX_DROP;
	return bpf_redirect(c->tap_ifindex, 0);
}

char _license[] SEC("license") = "Dual BSD/GPL";
