// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Sluice's uplink TAP in offload mode: every frame Sluice writes to the
// TAP (VXLAN super-packets with UDP-tunnel GSO metadata, or plain frames)
// goes straight out of the uplink, as the kernel's own vxlan device sends:
// redirected from the TAP's ingress to the uplink's egress, whole, so the
// uplink's driver (or the stack, last) segments it. No routing, no
// netfilter: these frames are already routed and translated.
//
// Built by dataplane/build.rs with clang -target bpf; attached with a TCX
// link (Linux 6.6) that lives as long as the daemon's TAP queue.

#include <linux/bpf.h>
#include <linux/pkt_cls.h>

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_redirect)(__u32 ifindex, __u64 flags) = (void *)23;

// Key 0: the uplink's ifindex (0 until the daemon writes it: dropped).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} target SEC(".maps");

SEC("tcx/ingress")
int sluice_to_uplink(struct __sk_buff *skb)
{
	__u32 key = 0;
	__u32 *ifindex = bpf_map_lookup_elem(&target, &key);

	if (!ifindex || !*ifindex)
		return TC_ACT_SHOT;
	return bpf_redirect(*ifindex, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
