// udp_pump: the packet pump of weftd's udp backend (flannel's original "udp" mode).
//
// Two native threads per pump, one per direction, so no packet ever touches the JS thread:
//   tx: TUN → look up the inner destination (IPv4 or IPv6) in the peer table → sendmmsg to the
//       peer's UDP endpoint (the datagram's payload is the bare IP packet, as flannel's udp does);
//   rx: recvmmsg from the UDP socket → write each payload into the TUN device.
// Buffers are allocated once at start; the threads block in poll() on their fd and an eventfd
// that stop() signals. Counters are relaxed atomics, bumped once per batch.
//
// The socket is IPv4 (0.0.0.0:port) for an IPv4-only network, as it always was; with IPv6 it is
// one dual-stack socket ([::]:port, IPV6_V6ONLY off), so one fd and one rx thread serve peers of
// both underlay families (IPv4 peers as v4-mapped addresses).
//
// The peer table is built by TypeScript (one 40-byte record per peer subnet) and swapped in
// whole: each thread checks a version number once per batch and, only when it changed, takes a
// shared_ptr copy under a mutex — so a lookup never races a replacement and the fast path
// takes no lock.

#include <node_api.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <netinet/udp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

namespace weft_udp {

const int kBatch = 64;
// Large enough for any packet the TUN hands over (a 64 KiB GSO skb at most) plus a
// virtio_net_hdr, so nothing is ever truncated.
const size_t kSlotBytes = 65536 + 64;
const int kSocketBufBytes = 8 * 1024 * 1024;
const size_t kRouteRecordBytes = 40;

// ---- errors ------------------------------------------------------------------------------

void throw_errno(napi_env env, int err, const char* call, const char* subject) {
  char msg[512];
  snprintf(msg, sizeof msg, "%s%s%s: %s", call, subject ? " " : "", subject ? subject : "", strerror(err));
  const char* name = strerrorname_np(err);
  napi_value code, message, error, errno_value, syscall_value;
  napi_create_string_utf8(env, name ? name : "EUNKNOWN", NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_create_int32(env, err, &errno_value);
  napi_set_named_property(env, error, "errno", errno_value);
  napi_create_string_utf8(env, call, NAPI_AUTO_LENGTH, &syscall_value);
  napi_set_named_property(env, error, "syscall", syscall_value);
  napi_throw(env, error);
}

bool arg_int(napi_env env, napi_value v, int32_t* out, const char* what) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t != napi_number) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s must be a number", what);
    napi_throw_type_error(env, nullptr, msg);
    return false;
  }
  napi_get_value_int32(env, v, out);
  return true;
}

// ---- peer table --------------------------------------------------------------------------

typedef unsigned __int128 u128;

// Where one peer subnet's datagrams go, in the socket's own family (an IPv4 peer behind a
// dual-stack socket is a v4-mapped sockaddr_in6).
struct PeerAddr {
  union {
    struct sockaddr sa;
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
  } u;
  socklen_t len;
};

// Big-endian loads from packet bytes (no alignment assumed).
uint16_t load16(const uint8_t* p) {
  uint16_t v;
  memcpy(&v, p, 2);
  return ntohs(v);
}

uint32_t load32(const uint8_t* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return ntohl(v);
}

u128 load128(const uint8_t* p) {
  u128 v = 0;
  for (int i = 0; i < 16; i++) v = (v << 8) | p[i];
  return v;
}

template <typename K>
K mask_of(uint8_t prefix) {
  const unsigned bits = sizeof(K) * 8;
  return prefix == 0 ? K(0) : static_cast<K>(~K(0) << (bits - prefix));
}

// One family's routes grouped by prefix length (longest first), each group sorted by network so
// a lookup is one binary search per distinct length — clusters normally have exactly one
// (SubnetLen, IPv6SubnetLen).
template <typename K>
struct PrefixTable {
  struct Route {
    K net;  // host order, masked
    uint8_t prefix;
    PeerAddr peer;
  };
  struct Group {
    K mask;
    size_t begin, end;
  };
  std::vector<Route> routes;
  std::vector<Group> groups;

  const Route* lookup(K dst) const {
    for (const Group& g : groups) {
      K key = dst & g.mask;
      size_t lo = g.begin, hi = g.end;
      while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        K net = routes[mid].net;
        if (net == key) return &routes[mid];
        if (net < key) lo = mid + 1; else hi = mid;
      }
    }
    return nullptr;
  }

  void index() {
    std::sort(routes.begin(), routes.end(), [](const Route& a, const Route& b) {
      return a.prefix != b.prefix ? a.prefix > b.prefix : a.net < b.net;
    });
    groups.clear();
    for (size_t i = 0, n = routes.size(); i < n;) {
      size_t j = i;
      while (j < n && routes[j].prefix == routes[i].prefix) j++;
      groups.push_back({mask_of<K>(routes[i].prefix), i, j});
      i = j;
    }
  }
};

struct Table {
  PrefixTable<uint32_t> v4;
  PrefixTable<u128> v6;
  size_t size() const { return v4.routes.size() + v6.routes.size(); }
};

// What the tx path does with one inner packet.
enum Verdict { kSend, kNoRoute, kMalformed };

// The peer owning the inner packet's destination: an IPv4 packet is looked up among the IPv4
// subnets, an IPv6 one among the IPv6 subnets. Anything else (or a packet shorter than its
// family's header) is malformed.
Verdict route_packet(const Table& t, const uint8_t* pkt, size_t len, const PeerAddr** peer) {
  if (len >= 20 && (pkt[0] >> 4) == 4) {
    const PrefixTable<uint32_t>::Route* r = t.v4.lookup(load32(pkt + 16));
    if (!r) return kNoRoute;
    *peer = &r->peer;
    return kSend;
  }
  if (len >= 40 && (pkt[0] >> 4) == 6) {
    const PrefixTable<u128>::Route* r = t.v6.lookup(load128(pkt + 24));
    if (!r) return kNoRoute;
    *peer = &r->peer;
    return kSend;
  }
  return kMalformed;
}

// Flannel's wire format, either family: one datagram is exactly one IP packet, whose own length
// field accounts for every byte. Anything else is junk or a peer that broke the format, and
// writing it would hand the stack a wrong packet.
bool whole_packet(const uint8_t* pkt, size_t len) {
  if (len >= 20 && (pkt[0] >> 4) == 4) return load16(pkt + 2) == len;
  if (len >= 40 && (pkt[0] >> 4) == 6) return 40u + load16(pkt + 4) == len;
  return false;
}

// A peer address (4 or 16 bytes) as the socket of family sock_family sends to it. false: an IPv6
// peer for an IPv4 socket.
bool make_peer(int sock_family, uint8_t family, const uint8_t* addr, const uint8_t* port_be, PeerAddr* out) {
  memset(out, 0, sizeof *out);
  if (sock_family == AF_INET) {
    if (family != 4) return false;
    out->u.v4.sin_family = AF_INET;
    memcpy(&out->u.v4.sin_port, port_be, 2);
    memcpy(&out->u.v4.sin_addr.s_addr, addr, 4);
    out->len = sizeof out->u.v4;
    return true;
  }
  out->u.v6.sin6_family = AF_INET6;
  memcpy(&out->u.v6.sin6_port, port_be, 2);
  if (family == 4) {
    out->u.v6.sin6_addr.s6_addr[10] = 0xff;
    out->u.v6.sin6_addr.s6_addr[11] = 0xff;
    memcpy(out->u.v6.sin6_addr.s6_addr + 12, addr, 4);
  } else {
    memcpy(out->u.v6.sin6_addr.s6_addr, addr, 16);
  }
  out->len = sizeof out->u.v6;
  return true;
}

// Record (40 bytes): inner family (1: 4 or 6), prefix length (1), UDP port (2, big-endian), peer
// family (1: 4 or 6), zero (3), network (16, big-endian; IPv4 in the first 4), peer address (16;
// IPv4 in the first 4). sock_family is the pump socket's. Returns nullptr with *why set on a
// malformed buffer.
std::shared_ptr<Table> parse_table(const uint8_t* p, size_t len, int sock_family, const char** why) {
  if (len % kRouteRecordBytes != 0) {
    *why = "route table length must be a multiple of 40 bytes";
    return nullptr;
  }
  auto t = std::make_shared<Table>();
  size_t n = len / kRouteRecordBytes;
  for (size_t i = 0; i < n; i++, p += kRouteRecordBytes) {
    uint8_t family = p[0], prefix = p[1], peer_family = p[4];
    if ((family != 4 && family != 6) || (peer_family != 4 && peer_family != 6)) {
      *why = "route families must be 4 or 6";
      return nullptr;
    }
    if (prefix > (family == 4 ? 32 : 128)) {
      *why = family == 4 ? "IPv4 route prefix length must be 0..32" : "IPv6 route prefix length must be 0..128";
      return nullptr;
    }
    if (load16(p + 2) == 0) {
      *why = "route peer port must not be 0";
      return nullptr;
    }
    PeerAddr peer;
    if (!make_peer(sock_family, peer_family, p + 24, p + 2, &peer)) {
      *why = "an IPv6 peer needs a pump started with IPv6";
      return nullptr;
    }
    if (family == 4) t->v4.routes.push_back({load32(p + 8) & mask_of<uint32_t>(prefix), prefix, peer});
    else t->v6.routes.push_back({load128(p + 8) & mask_of<u128>(prefix), prefix, peer});
  }
  t->v4.index();
  t->v6.index();
  return t;
}

// ---- the pump ----------------------------------------------------------------------------

enum Counter {
  kTxPackets,      // TUN → UDP, sent
  kTxBytes,
  kRxPackets,      // UDP → TUN, written
  kRxBytes,
  kDropNoRoute,    // no peer for the inner destination
  kDropMalformed,  // neither IPv4 nor IPv6 (either direction), or a truncated datagram
  kSendErrors,     // sendmmsg failed for a datagram (peer unreachable, ...)
  kTunErrors,      // read/write on the TUN device failed
  kRecvErrors,
  kTxGsoPackets,   // offload: TCP super-packets (TSO) read from the TUN device
  kTxGsoSegments,  // offload: MTU-sized segments cut from them
  kRxGroBatches,   // offload: receives that UDP GRO had coalesced (more than one datagram)
  kRxGroSegments,  // offload: datagrams inside those receives
  kRxTunWrites,    // writes to the TUN device (rxPackets / rxTunWrites = packets per write)
  kRxTunGsoWrites, // offload: writes carrying a coalesced TCP super-packet (GSO_TCPV4/V6)
  kCounterCount
};

const char* const kCounterNames[kCounterCount] = {
    "txPackets", "txBytes", "rxPackets", "rxBytes", "dropNoRoute",
    "dropMalformed", "sendErrors", "tunErrors", "recvErrors", "txGsoPackets", "txGsoSegments",
    "rxGroBatches", "rxGroSegments", "rxTunWrites", "rxTunGsoWrites"};

struct Pump {
  int tun_fd = -1;  // owned by the caller (TypeScript closes it after stop)
  int sock_fd = -1;
  int sock_family = AF_INET;  // AF_INET6: dual-stack, peers of either family
  int stop_fd = -1;
  // The TUN fd carries a virtio_net_hdr and the kernel hands us TCP super-packets (TSO): the tx
  // thread segments them and sends with UDP GSO; rx uses UDP GRO.
  bool offload = false;
  pthread_t tx_thread, rx_thread;
  bool tx_started = false, rx_started = false;
  bool stopped = false;

  std::mutex table_mu;
  std::shared_ptr<Table> table = std::make_shared<Table>();
  std::atomic<uint64_t> table_version{0};

  std::atomic<uint64_t> counters[kCounterCount];

  // Tests only (udpPumpCoalesce): TUN writes are collected here instead of written.
  std::vector<std::vector<uint8_t>>* capture = nullptr;

  Pump() {
    for (auto& c : counters) c.store(0, std::memory_order_relaxed);
  }
  void add(Counter c, uint64_t n) {
    if (n) counters[c].fetch_add(n, std::memory_order_relaxed);
  }
};

// Refreshes the thread's table only when TypeScript swapped in a new one.
void refresh_table(Pump* pump, std::shared_ptr<Table>* local, uint64_t* version) {
  uint64_t v = pump->table_version.load(std::memory_order_acquire);
  if (v == *version) return;
  std::lock_guard<std::mutex> lock(pump->table_mu);
  *local = pump->table;
  *version = pump->table_version.load(std::memory_order_relaxed);
}

// Waits until fd is ready for events or stop is signalled. false: stop (or poll failed).
bool wait_ready(Pump* pump, int fd, short events) {
  struct pollfd fds[2] = {{fd, events, 0}, {pump->stop_fd, POLLIN, 0}};
  for (;;) {
    int r = poll(fds, 2, -1);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return false;
    if (fds[1].revents) return false;
    if (fds[0].revents & (events | POLLERR | POLLHUP)) return true;
  }
}


// ---- offload helpers ---------------------------------------------------------------------

// struct virtio_net_hdr (linux/virtio_net.h does not compile as C++), in host byte order as
// TUN uses it on a little-endian host.
struct virtio_net_hdr {
  uint8_t flags;
  uint8_t gso_type;
  uint16_t hdr_len;
  uint16_t gso_size;
  uint16_t csum_start;
  uint16_t csum_offset;
};
const uint8_t VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
const uint8_t VIRTIO_NET_HDR_F_DATA_VALID = 2;
const uint8_t VIRTIO_NET_HDR_GSO_NONE = 0;
const uint8_t VIRTIO_NET_HDR_GSO_TCPV4 = 1;
const uint8_t VIRTIO_NET_HDR_GSO_TCPV6 = 4;
const uint8_t VIRTIO_NET_HDR_GSO_ECN = 0x80;

const size_t kVnetHdr = sizeof(struct virtio_net_hdr);
// IPv4 total length limit for one UDP GSO send (65535 - IP - UDP headers); below IPv6's too.
const size_t kMaxGsoPayload = 65507;
const size_t kMaxGsoSegments = 64;
// An IPv4 header with options (60), or IPv6's (40), and a TCP header with options (60).
const size_t kMaxHeaderBytes = 120;
// Segments of one TSO super-packet at an MSS as small as 536 bytes; a super-packet needing more is
// refused as malformed (TCP never builds one: its MSS follows the TUN's MTU).
const size_t kMaxTsoSegments = kSlotBytes / 536 + 1;

// One's-complement sum in memory byte order: 32-bit words into a 64-bit accumulator, which
// cannot overflow for any packet and which the compiler vectorises (an end-around-carry loop on
// 64-bit words measured ~10% slower end to end, as it does not); fold() turns it into the value
// to store.
uint64_t csum_add(const uint8_t* p, size_t n, uint64_t sum) {
  while (n >= 4) {
    uint32_t w;
    memcpy(&w, p, 4);
    sum += w;
    p += 4;
    n -= 4;
  }
  if (n >= 2) {
    uint16_t w;
    memcpy(&w, p, 2);
    sum += w;
    p += 2;
    n -= 2;
  }
  if (n) {
    uint8_t last[2] = {p[0], 0};
    uint16_t w;
    memcpy(&w, last, 2);
    sum += w;
  }
  return sum;
}

uint16_t csum_fold(uint64_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum & 0xffff);
}

void ip_checksum(uint8_t* ip, size_t ihl) {
  memset(ip + 10, 0, 2);
  uint16_t c = csum_fold(csum_add(ip, ihl, 0));
  memcpy(ip + 10, &c, 2);
}

// The TCP pseudo-header's sum for the packet's family (its source, destination, protocol and
// TCP length; IPv6's length field is 32 bits).
uint64_t tcp_pseudo(const uint8_t* ip, size_t tcp_len) {
  bool v6 = (ip[0] >> 4) == 6;
  uint64_t sum = v6 ? csum_add(ip + 8, 32, 0) : csum_add(ip + 12, 8, 0);
  sum += htons(IPPROTO_TCP);
  sum += htons(static_cast<uint16_t>(tcp_len));
  if (v6) sum += htons(static_cast<uint16_t>(tcp_len >> 16));
  return sum;
}

// The IP header length of a TCP packet without IPv4 fragmentation concerns checked: IPv4's IHL,
// or 40 for an IPv6 packet whose next header is TCP (extension headers are not carried by TSO
// packets and never merged). 0: not TCP, or too short for the headers it claims.
size_t tcp_ip_header(const uint8_t* pkt, size_t len) {
  if (len >= 40 && (pkt[0] >> 4) == 4) {
    size_t ihl = (pkt[0] & 15) * 4;
    return ihl >= 20 && pkt[9] == IPPROTO_TCP && len >= ihl + 20 ? ihl : 0;
  }
  if (len >= 60 && (pkt[0] >> 4) == 6) return pkt[6] == IPPROTO_TCP ? 40 : 0;
  return 0;
}

// Sets the IP length field for a packet of len bytes (IPv6: the payload length), and IPv4's
// header checksum.
void set_ip_length(uint8_t* ip, size_t iphl, size_t len) {
  if ((ip[0] >> 4) == 6) {
    uint16_t plen = htons(static_cast<uint16_t>(len - 40));
    memcpy(ip + 4, &plen, 2);
    return;
  }
  uint16_t tot = htons(static_cast<uint16_t>(len));
  memcpy(ip + 2, &tot, 2);
  ip_checksum(ip, iphl);
}

// Completes a checksum the kernel left to "hardware" (VIRTIO_NET_HDR_F_NEEDS_CSUM): the field
// already holds the pseudo-header sum.
bool finish_checksum(uint8_t* pkt, size_t len, const struct virtio_net_hdr& h) {
  size_t start = h.csum_start, at = start + h.csum_offset;
  if (start >= len || at + 2 > len) return false;
  uint16_t c = csum_fold(csum_add(pkt + start, len - start, 0));
  memcpy(pkt + at, &c, 2);
  return true;
}

// Splits a TSO super-packet (TCP over IPv4 or IPv6) into MSS-sized segments without copying the
// payload: each segment's rewritten headers go to hdrs, and iov gets (headers, payload-in-pkt)
// pairs. Every segment but the last is exactly *seg_bytes long, which is what UDP GSO needs.
// Returns the number of segments, or 0 when the packet is not a well-formed TCP GSO packet or
// needs more than max_segments segments.
size_t segment_tcp(uint8_t* pkt, size_t len, uint16_t mss, uint8_t* hdrs, struct iovec* iov, size_t max_segments, size_t* seg_bytes) {
  size_t ihl = tcp_ip_header(pkt, len);
  if (ihl == 0 || mss == 0) return 0;
  bool v6 = (pkt[0] >> 4) == 6;
  if (v6 && 40u + load16(pkt + 4) != len) return 0;
  size_t thl = (pkt[ihl + 12] >> 4) * 4;
  size_t hdr = ihl + thl;
  if (thl < 20 || hdr > len) return 0;
  size_t payload = len - hdr;
  size_t count = payload == 0 ? 1 : (payload + mss - 1) / mss;
  if (count > max_segments) return 0;
  uint16_t id0 = v6 ? 0 : load16(pkt + 4);
  uint32_t seq0 = load32(pkt + ihl + 4);
  uint8_t flags = pkt[ihl + 13];
  *seg_bytes = hdr + mss;
  for (size_t i = 0; i < count; i++) {
    size_t off = i * mss;
    size_t seg = payload - off < mss ? payload - off : mss;
    uint8_t* ip = hdrs + i * kMaxHeaderBytes;
    memcpy(ip, pkt, hdr);
    if (!v6) {
      uint16_t id = htons(static_cast<uint16_t>(id0 + i));
      memcpy(ip + 4, &id, 2);
    }
    set_ip_length(ip, ihl, hdr + seg);
    uint8_t* tcp = ip + ihl;
    uint32_t seq = htonl(seq0 + static_cast<uint32_t>(off));
    memcpy(tcp + 4, &seq, 4);
    uint8_t f = flags;
    if (i + 1 < count) f &= static_cast<uint8_t>(~0x09);  // FIN and PSH only on the last
    if (i > 0) f &= static_cast<uint8_t>(~0x80);          // CWR only on the first
    tcp[13] = f;
    memset(tcp + 16, 0, 2);
    const uint8_t* data = pkt + hdr + off;
    uint64_t sum = csum_add(data, seg, csum_add(tcp, thl, tcp_pseudo(ip, thl + seg)));
    uint16_t c = csum_fold(sum);
    memcpy(tcp + 16, &c, 2);
    iov[2 * i] = {ip, hdr};
    iov[2 * i + 1] = {const_cast<uint8_t*>(data), seg};
  }
  return count;
}

// Sends `count` segments described by iov pairs (all seg bytes long but the last) with as few
// UDP GSO sends as the kernel's limits allow. Returns datagrams sent; *failed counts ones the
// kernel refused.
uint64_t send_gso(Pump* pump, const PeerAddr* to, struct iovec* iov, size_t count, size_t seg, uint64_t* failed, uint64_t* bytes) {
  size_t per_send = kMaxGsoPayload / seg;
  if (per_send > kMaxGsoSegments) per_send = kMaxGsoSegments;
  if (per_send == 0) per_send = 1;
  uint64_t sent = 0;
  for (size_t first = 0; first < count;) {
    size_t segments = count - first < per_send ? count - first : per_send;
    size_t chunk = 0;
    for (size_t i = first; i < first + segments; i++) chunk += iov[2 * i].iov_len + iov[2 * i + 1].iov_len;
    char control[CMSG_SPACE(sizeof(uint16_t))];
    memset(control, 0, sizeof control);
    struct msghdr h;
    memset(&h, 0, sizeof h);
    h.msg_name = const_cast<struct sockaddr*>(&to->u.sa);
    h.msg_namelen = to->len;
    h.msg_iov = iov + 2 * first;
    h.msg_iovlen = 2 * segments;
    if (segments > 1) {
      h.msg_control = control;
      h.msg_controllen = sizeof control;
      struct cmsghdr* c = CMSG_FIRSTHDR(&h);
      c->cmsg_level = SOL_UDP;
      c->cmsg_type = UDP_SEGMENT;
      c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      uint16_t gso = static_cast<uint16_t>(seg);
      memcpy(CMSG_DATA(c), &gso, sizeof gso);
    }
    ssize_t r = sendmsg(pump->sock_fd, &h, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == ENOBUFS)) {
      if (!wait_ready(pump, pump->sock_fd, POLLOUT)) return sent;
      continue;
    }
    if (r < 0) *failed += segments;
    else {
      sent += segments;
      *bytes += chunk;
    }
    first += segments;
  }
  return sent;
}

struct Slots {
  std::vector<uint8_t> data;
  std::vector<struct mmsghdr> msgs;
  std::vector<struct iovec> iovs;
  std::vector<PeerAddr> addrs;
  Slots() : data(kBatch * kSlotBytes), msgs(kBatch), iovs(kBatch), addrs(kBatch) {}
  uint8_t* slot(int i) { return data.data() + static_cast<size_t>(i) * kSlotBytes; }
};

void* tx_main(void* arg) {
  Pump* pump = static_cast<Pump*>(arg);
  Slots s;
  std::shared_ptr<Table> table;
  uint64_t version = UINT64_MAX;
  while (wait_ready(pump, pump->tun_fd, POLLIN)) {
    refresh_table(pump, &table, &version);
    int n = 0;
    uint64_t no_route = 0, malformed = 0, tun_errors = 0;
    // Drain up to a batch of packets: each read() returns exactly one packet.
    while (n < kBatch) {
      uint8_t* buf = s.slot(n);
      ssize_t len = read(pump->tun_fd, buf, kSlotBytes);
      if (len < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN) tun_errors++;
        break;
      }
      const PeerAddr* peer = nullptr;
      Verdict v = route_packet(*table, buf, static_cast<size_t>(len), &peer);
      if (v != kSend) {
        (v == kNoRoute ? no_route : malformed)++;
        continue;
      }
      s.addrs[n] = *peer;
      s.iovs[n] = {buf, static_cast<size_t>(len)};
      struct msghdr& h = s.msgs[n].msg_hdr;
      memset(&h, 0, sizeof h);
      h.msg_name = &s.addrs[n].u.sa;
      h.msg_namelen = s.addrs[n].len;
      h.msg_iov = &s.iovs[n];
      h.msg_iovlen = 1;
      n++;
    }
    pump->add(kDropNoRoute, no_route);
    pump->add(kDropMalformed, malformed);
    pump->add(kTunErrors, tun_errors);
    uint64_t packets = 0, bytes = 0, send_errors = 0;
    int done = 0;
    while (done < n) {
      int r = sendmmsg(pump->sock_fd, &s.msgs[done], n - done, 0);
      if (r > 0) {
        for (int i = done; i < done + r; i++) bytes += s.msgs[i].msg_len;
        packets += r;
        done += r;
        continue;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == ENOBUFS) {
        if (!wait_ready(pump, pump->sock_fd, POLLOUT)) break;
        continue;
      }
      // The first datagram failed (e.g. ECONNREFUSED/EHOSTUNREACH from an ICMP error): skip it.
      send_errors++;
      done++;
    }
    pump->add(kTxPackets, packets);
    pump->add(kTxBytes, bytes);
    pump->add(kSendErrors, send_errors);
  }
  return nullptr;
}

void* rx_main(void* arg) {
  Pump* pump = static_cast<Pump*>(arg);
  Slots s;
  for (int i = 0; i < kBatch; i++) {
    s.iovs[i] = {s.slot(i), kSlotBytes};
    struct msghdr& h = s.msgs[i].msg_hdr;
    memset(&h, 0, sizeof h);
    h.msg_iov = &s.iovs[i];
    h.msg_iovlen = 1;
  }
  while (wait_ready(pump, pump->sock_fd, POLLIN)) {
    int n = recvmmsg(pump->sock_fd, s.msgs.data(), kBatch, MSG_DONTWAIT, nullptr);
    if (n < 0) {
      if (errno != EAGAIN && errno != EINTR) pump->add(kRecvErrors, 1);
      continue;
    }
    uint64_t packets = 0, bytes = 0, malformed = 0, tun_errors = 0;
    for (int i = 0; i < n; i++) {
      uint8_t* buf = s.slot(i);
      size_t len = s.msgs[i].msg_len;
      if ((s.msgs[i].msg_hdr.msg_flags & MSG_TRUNC) || !whole_packet(buf, len)) {
        malformed++;
        continue;
      }
      ssize_t w;
      do {
        w = write(pump->tun_fd, buf, len);
      } while (w < 0 && errno == EINTR);
      if (w < 0) {
        tun_errors++;
        continue;
      }
      packets++;
      bytes += len;
    }
    pump->add(kRxTunWrites, packets);
    pump->add(kRxPackets, packets);
    pump->add(kRxBytes, bytes);
    pump->add(kDropMalformed, malformed);
    pump->add(kTunErrors, tun_errors);
  }
  return nullptr;
}


// Sends the batched (non-GSO) datagrams s.msgs[0..n) with sendmmsg.
void flush_batch(Pump* pump, Slots& s, int n, uint64_t* packets, uint64_t* bytes, uint64_t* errors) {
  int done = 0;
  while (done < n) {
    int r = sendmmsg(pump->sock_fd, &s.msgs[done], n - done, 0);
    if (r > 0) {
      for (int i = done; i < done + r; i++) *bytes += s.msgs[i].msg_len;
      *packets += r;
      done += r;
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == ENOBUFS) {
      if (!wait_ready(pump, pump->sock_fd, POLLOUT)) return;
      continue;
    }
    (*errors)++;
    done++;
  }
}

// tx with offloads: each read() may return a TSO super-packet (up to 64 KiB) behind a
// virtio_net_hdr. Plain packets are batched for sendmmsg as before; a super-packet is cut into
// MSS-sized TCP segments — fresh headers in a small buffer, the payload gathered in place from the
// read buffer — and sent with UDP GSO, so the kernel still moves ~64 KiB per system call.
void* tx_offload_main(void* arg) {
  Pump* pump = static_cast<Pump*>(arg);
  Slots s;
  // Rewritten headers per segment, and the (headers, payload) pairs the GSO sends gather.
  std::vector<uint8_t> seg_headers(kMaxTsoSegments * kMaxHeaderBytes);
  std::vector<struct iovec> seg_iov(2 * kMaxTsoSegments);
  std::shared_ptr<Table> table;
  uint64_t version = UINT64_MAX;
  while (wait_ready(pump, pump->tun_fd, POLLIN)) {
    refresh_table(pump, &table, &version);
    int n = 0;
    uint64_t no_route = 0, malformed = 0, tun_errors = 0, packets = 0, bytes = 0, send_errors = 0;
    uint64_t gso_packets = 0, gso_segments = 0;
    for (int reads = 0; reads < kBatch && n < kBatch; reads++) {
      uint8_t* buf = s.slot(n);
      ssize_t got = read(pump->tun_fd, buf, kSlotBytes);
      if (got < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN) tun_errors++;
        break;
      }
      struct virtio_net_hdr vh;
      if (static_cast<size_t>(got) < kVnetHdr + 20) {
        malformed++;
        continue;
      }
      memcpy(&vh, buf, kVnetHdr);
      uint8_t* pkt = buf + kVnetHdr;
      size_t len = static_cast<size_t>(got) - kVnetHdr;
      const PeerAddr* peer = nullptr;
      Verdict v = route_packet(*table, pkt, len, &peer);
      if (v != kSend) {
        (v == kNoRoute ? no_route : malformed)++;
        continue;
      }
      uint8_t gso_type = vh.gso_type & static_cast<uint8_t>(~VIRTIO_NET_HDR_GSO_ECN);
      if (gso_type == VIRTIO_NET_HDR_GSO_TCPV4 || gso_type == VIRTIO_NET_HDR_GSO_TCPV6) {
        // Keep packet order: what is already batched goes first.
        flush_batch(pump, s, n, &packets, &bytes, &send_errors);
        n = 0;
        size_t seg = 0;
        size_t count = segment_tcp(pkt, len, vh.gso_size, seg_headers.data(), seg_iov.data(), kMaxTsoSegments, &seg);
        // The GSO type must name the packet's own family.
        if (!count || (gso_type == VIRTIO_NET_HDR_GSO_TCPV6) != ((pkt[0] >> 4) == 6)) {
          malformed++;
          continue;
        }
        gso_packets++;
        gso_segments += count;
        packets += send_gso(pump, peer, seg_iov.data(), count, seg, &send_errors, &bytes);
        continue;
      }
      if (gso_type != VIRTIO_NET_HDR_GSO_NONE) {
        malformed++;  // only TSO4 and TSO6 are enabled on the device
        continue;
      }
      if ((vh.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) && !finish_checksum(pkt, len, vh)) {
        malformed++;
        continue;
      }
      s.addrs[n] = *peer;
      s.iovs[n] = {pkt, len};
      struct msghdr& h = s.msgs[n].msg_hdr;
      memset(&h, 0, sizeof h);
      h.msg_name = &s.addrs[n].u.sa;
      h.msg_namelen = s.addrs[n].len;
      h.msg_iov = &s.iovs[n];
      h.msg_iovlen = 1;
      n++;
    }
    flush_batch(pump, s, n, &packets, &bytes, &send_errors);
    pump->add(kDropNoRoute, no_route);
    pump->add(kDropMalformed, malformed);
    pump->add(kTunErrors, tun_errors);
    pump->add(kTxPackets, packets);
    pump->add(kTxBytes, bytes);
    pump->add(kSendErrors, send_errors);
    pump->add(kTxGsoPackets, gso_packets);
    pump->add(kTxGsoSegments, gso_segments);
  }
  return nullptr;
}

// ---- receive-side coalescing -------------------------------------------------------------
//
// What UDP GRO hands over is a run of MTU-sized inner packets. Writing each one to the TUN costs
// a system call and a trip through the stack per 1.4 KB; instead, consecutive in-order segments
// of one TCP flow are merged into a single super-packet written behind a virtio_net_hdr
// (GSO_TCPV4 or GSO_TCPV6), exactly what the kernel's own GRO would have built. The stack then
// forwards or delivers ~64 KiB per write and re-segments only where a real MTU requires it. The
// rules for what may merge follow tcp_gro_receive: same addresses, ports, IP TOS/TTL/DF and
// options (IPv6: traffic class, flow label and hop limit; no extension headers), same ACK number,
// TCP flags (but PSH), window and options; the sequence number must continue; every segment but
// the last has the first one's payload size; PSH or a shorter segment ends a run.

const uint8_t kTcpFlagPsh = 0x08;
const uint8_t kTcpFlagAck = 0x10;
const size_t kMaxRunSegments = 64;
const size_t kMaxOpenRuns = 8;
const size_t kMaxIpPacket = 65535;

// A TCP segment (over IPv4 or IPv6) as parsed from a received datagram; ihl is the IP header's
// length (40 for IPv6).
struct TcpSegment {
  uint8_t* pkt;
  size_t len, ihl, thl, payload;
  uint32_t seq;
};

// True when pkt (len bytes, already known to be one whole IP packet) is a TCP segment with data,
// no IPv4 fragment bits (no IPv6 extension headers), and only ACK (and maybe PSH) set — the only
// kind that may join a super-packet.
bool parse_mergeable_tcp(uint8_t* pkt, size_t len, TcpSegment* out) {
  size_t ihl = tcp_ip_header(pkt, len);
  if (ihl == 0) return false;
  if ((pkt[0] >> 4) == 4 && (load16(pkt + 2) != len || (load16(pkt + 6) & 0x3fff) != 0)) return false;
  if ((pkt[0] >> 4) == 6 && 40u + load16(pkt + 4) != len) return false;
  const uint8_t* tcp = pkt + ihl;
  size_t thl = (tcp[12] >> 4) * 4;
  if (thl < 20 || ihl + thl >= len) return false;
  uint8_t flags = tcp[13];
  if ((flags & static_cast<uint8_t>(~(kTcpFlagAck | kTcpFlagPsh))) != 0 || !(flags & kTcpFlagAck)) return false;
  *out = {pkt, len, ihl, thl, len - ihl - thl, load32(tcp + 4)};
  return true;
}

// One flow's merge in progress. iov[0] is the virtio_net_hdr, iov[1] the first packet whole,
// then each later segment's payload — the write gathers them, nothing is copied.
struct TcpRun {
  bool open = false;
  TcpSegment head;
  size_t mss = 0;
  uint32_t next_seq = 0;
  size_t total = 0;  // length of the merged packet, IP header included
  size_t segments = 0;
  bool closed = false;  // took a PSH or a short segment: nothing may follow
  bool psh = false;
  struct virtio_net_hdr vh;
  struct iovec iov[kMaxRunSegments + 2];
};

// Same family, addresses and ports.
bool same_flow(const TcpSegment& a, const TcpSegment& b) {
  if ((a.pkt[0] >> 4) != (b.pkt[0] >> 4)) return false;
  bool addrs = (a.pkt[0] >> 4) == 6 ? memcmp(a.pkt + 8, b.pkt + 8, 32) == 0 : memcmp(a.pkt + 12, b.pkt + 12, 8) == 0;
  return addrs && memcmp(a.pkt + a.ihl, b.pkt + b.ihl, 4) == 0;
}

bool can_append(const TcpRun& run, const TcpSegment& s) {
  const TcpSegment& h = run.head;
  if (run.closed || run.segments >= kMaxRunSegments) return false;
  if (s.seq != run.next_seq || s.payload > run.mss || run.total + s.payload > kMaxIpPacket) return false;
  if (s.ihl != h.ihl || s.thl != h.thl) return false;
  if ((h.pkt[0] >> 4) == 6) {
    // IPv6: version, traffic class, flow label; hop limit.
    if (memcmp(h.pkt, s.pkt, 4) != 0 || h.pkt[7] != s.pkt[7]) return false;
  } else {
    // IPv4: TOS, fragment word (DF), TTL, options.
    if (h.pkt[1] != s.pkt[1] || memcmp(h.pkt + 6, s.pkt + 6, 3) != 0) return false;
    if (h.ihl > 20 && memcmp(h.pkt + 20, s.pkt + 20, h.ihl - 20) != 0) return false;
  }
  // TCP: ACK number; data offset, flags but PSH, window; options.
  const uint8_t* ht = h.pkt + h.ihl;
  const uint8_t* st = s.pkt + s.ihl;
  if (memcmp(ht + 8, st + 8, 5) != 0 || ((ht[13] ^ st[13]) & static_cast<uint8_t>(~kTcpFlagPsh)) != 0) return false;
  if (memcmp(ht + 14, st + 14, 2) != 0) return false;
  return memcmp(ht + 20, st + 20, h.thl - 20) == 0;
}

void start_run(TcpRun* run, const TcpSegment& s) {
  run->open = true;
  run->head = s;
  run->mss = s.payload;
  run->next_seq = s.seq + static_cast<uint32_t>(s.payload);
  run->total = s.len;
  run->segments = 1;
  run->psh = (s.pkt[s.ihl + 13] & kTcpFlagPsh) != 0;
  run->closed = run->psh;
  run->iov[1] = {s.pkt, s.len};
}

void append_run(TcpRun* run, const TcpSegment& s) {
  run->iov[run->segments + 1] = {s.pkt + s.ihl + s.thl, s.payload};
  run->segments++;
  run->total += s.payload;
  run->next_seq += static_cast<uint32_t>(s.payload);
  bool psh = (s.pkt[s.ihl + 13] & kTcpFlagPsh) != 0;
  run->psh = run->psh || psh;
  if (psh || s.payload < run->mss) run->closed = true;
}

struct RxTally {
  uint64_t packets = 0, bytes = 0, writes = 0, gso_writes = 0, tun_errors = 0;
};

// Writes iov[0..n) to the TUN device; n_packets inner packets of payload_bytes in all.
void tun_write(Pump* pump, struct iovec* iov, int n, uint64_t n_packets, size_t ip_bytes, RxTally* t) {
  ssize_t w;
  if (pump->capture) {
    std::vector<uint8_t> out;
    for (int i = 0; i < n; i++) out.insert(out.end(), static_cast<uint8_t*>(iov[i].iov_base), static_cast<uint8_t*>(iov[i].iov_base) + iov[i].iov_len);
    w = static_cast<ssize_t>(out.size());
    pump->capture->push_back(std::move(out));
  } else {
    do {
      w = writev(pump->tun_fd, iov, n);
    } while (w < 0 && errno == EINTR);
  }
  if (w < 0) {
    t->tun_errors++;
    return;
  }
  t->writes++;
  t->packets += n_packets;
  t->bytes += ip_bytes;
}

const struct virtio_net_hdr kDataValid = {VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_GSO_NONE, 0, 0, 0, 0};

// Writes a lone packet whose checksum the outer UDP checksum already vouched for.
void write_single(Pump* pump, uint8_t* pkt, size_t len, RxTally* t) {
  struct iovec iov[2] = {{const_cast<struct virtio_net_hdr*>(&kDataValid), kVnetHdr}, {pkt, len}};
  tun_write(pump, iov, 2, 1, len, t);
}

// Turns the run's first packet into the super-packet's headers and writes it with its followers.
void flush_run(Pump* pump, TcpRun* run, RxTally* t) {
  if (!run->open) return;
  run->open = false;
  TcpSegment& h = run->head;
  if (run->segments == 1) {
    write_single(pump, h.pkt, h.len, t);
    return;
  }
  bool v6 = (h.pkt[0] >> 4) == 6;
  set_ip_length(h.pkt, h.ihl, run->total);
  uint8_t* tcp = h.pkt + h.ihl;
  if (run->psh) tcp[13] |= kTcpFlagPsh;
  // CHECKSUM_PARTIAL convention: the field holds the folded pseudo-header sum, uncomplemented;
  // segmentation (or the local stack, which trusts it) finishes the job.
  uint16_t pseudo = static_cast<uint16_t>(~csum_fold(tcp_pseudo(h.pkt, run->total - h.ihl)));
  memcpy(tcp + 16, &pseudo, 2);
  struct virtio_net_hdr& vh = run->vh;
  vh.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  vh.gso_type = v6 ? VIRTIO_NET_HDR_GSO_TCPV6 : VIRTIO_NET_HDR_GSO_TCPV4;
  vh.hdr_len = static_cast<uint16_t>(h.ihl + h.thl);
  vh.gso_size = static_cast<uint16_t>(run->mss);
  vh.csum_start = static_cast<uint16_t>(h.ihl);
  vh.csum_offset = 16;
  run->iov[0] = {&vh, kVnetHdr};
  uint64_t before = t->writes;
  tun_write(pump, run->iov, static_cast<int>(run->segments + 2), run->segments, run->total + (run->segments - 1) * (h.ihl + h.thl), t);
  if (t->writes != before) t->gso_writes++;
}

// The merges open within one receive batch (the buffers they point into live that long).
struct Coalescer {
  TcpRun runs[kMaxOpenRuns];
  size_t next_victim = 0;

  TcpRun* find(const TcpSegment& s) {
    for (TcpRun& r : runs)
      if (r.open && same_flow(r.head, s)) return &r;
    return nullptr;
  }

  TcpRun* free_run(Pump* pump, RxTally* t) {
    for (TcpRun& r : runs)
      if (!r.open) return &r;
    TcpRun* victim = &runs[next_victim];
    next_victim = (next_victim + 1) % kMaxOpenRuns;
    flush_run(pump, victim, t);
    return victim;
  }

  // Takes one inner packet: merges it, or writes it (after its flow's pending run, keeping order).
  void add(Pump* pump, uint8_t* pkt, size_t len, RxTally* t) {
    TcpSegment s;
    if (!parse_mergeable_tcp(pkt, len, &s)) {
      if (size_t ihl = tcp_ip_header(pkt, len)) {
        // A TCP packet that cannot merge (SYN, FIN, pure ACK...) still goes after its flow's run.
        TcpSegment probe;
        probe.pkt = pkt;
        probe.ihl = ihl;
        if (TcpRun* r = find(probe)) flush_run(pump, r, t);
      }
      write_single(pump, pkt, len, t);
      return;
    }
    TcpRun* r = find(s);
    if (r && can_append(*r, s)) {
      append_run(r, s);
      return;
    }
    if (r) flush_run(pump, r, t);
    else r = free_run(pump, t);
    start_run(r, s);
  }

  void flush_all(Pump* pump, RxTally* t) {
    for (TcpRun& r : runs) flush_run(pump, &r, t);
  }
};

// rx with offloads: UDP GRO hands over runs of same-sized datagrams in one buffer (the cmsg says
// the size); the inner packets go through the coalescer above on their way into the TUN.
void* rx_offload_main(void* arg) {
  Pump* pump = static_cast<Pump*>(arg);
  Slots s;
  const size_t kControl = CMSG_SPACE(sizeof(int));
  std::vector<uint8_t> control(kBatch * kControl);
  std::unique_ptr<Coalescer> co(new Coalescer());
  while (wait_ready(pump, pump->sock_fd, POLLIN)) {
    for (int i = 0; i < kBatch; i++) {
      s.iovs[i] = {s.slot(i), kSlotBytes};
      struct msghdr& h = s.msgs[i].msg_hdr;
      memset(&h, 0, sizeof h);
      h.msg_iov = &s.iovs[i];
      h.msg_iovlen = 1;
      h.msg_control = control.data() + i * kControl;
      h.msg_controllen = kControl;
    }
    int n = recvmmsg(pump->sock_fd, s.msgs.data(), kBatch, MSG_DONTWAIT, nullptr);
    if (n < 0) {
      if (errno != EAGAIN && errno != EINTR) pump->add(kRecvErrors, 1);
      continue;
    }
    RxTally t;
    uint64_t malformed = 0, gro_batches = 0, gro_segments = 0;
    for (int i = 0; i < n; i++) {
      struct msghdr& h = s.msgs[i].msg_hdr;
      size_t len = s.msgs[i].msg_len;
      if (h.msg_flags & MSG_TRUNC) {
        malformed++;
        continue;
      }
      size_t seg = len;
      for (struct cmsghdr* c = CMSG_FIRSTHDR(&h); c; c = CMSG_NXTHDR(&h, c)) {
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
          int v;
          memcpy(&v, CMSG_DATA(c), sizeof v);
          if (v > 0) seg = static_cast<size_t>(v);
        }
      }
      if (seg < len) {
        gro_batches++;
        gro_segments += (len + seg - 1) / seg;
      }
      uint8_t* buf = s.slot(i);
      for (size_t off = 0; off < len; off += seg) {
        size_t plen = len - off < seg ? len - off : seg;
        uint8_t* pkt = buf + off;
        if (!whole_packet(pkt, plen)) {
          malformed++;  // each datagram must be exactly one IP packet, as in rx_main
          continue;
        }
        co->add(pump, pkt, plen, &t);
      }
    }
    co->flush_all(pump, &t);
    pump->add(kRxPackets, t.packets);
    pump->add(kRxBytes, t.bytes);
    pump->add(kRxTunWrites, t.writes);
    pump->add(kRxTunGsoWrites, t.gso_writes);
    pump->add(kRxGroBatches, gro_batches);
    pump->add(kRxGroSegments, gro_segments);
    pump->add(kDropMalformed, malformed);
    pump->add(kTunErrors, t.tun_errors);
  }
  return nullptr;
}

// Stops the threads and closes what the pump owns. Safe to call twice.
void stop_pump(Pump* pump) {
  if (pump->stopped) return;
  pump->stopped = true;
  if (pump->stop_fd >= 0) {
    uint64_t one = 1;
    ssize_t w = write(pump->stop_fd, &one, sizeof one);
    (void)w;  // an eventfd write only fails on counter overflow, impossible here
  }
  if (pump->tx_started) pthread_join(pump->tx_thread, nullptr);
  if (pump->rx_started) pthread_join(pump->rx_thread, nullptr);
  if (pump->sock_fd >= 0) close(pump->sock_fd);
  if (pump->stop_fd >= 0) close(pump->stop_fd);
  pump->sock_fd = pump->stop_fd = -1;
}

void finalize_pump(napi_env, void* data, void*) {
  Pump* pump = static_cast<Pump*>(data);
  stop_pump(pump);
  delete pump;
}

// ---- socket in a namespace ---------------------------------------------------------------

struct SocketJob {
  const char* ns_path;  // null: the calling process's namespace
  int port;
  bool ipv6;  // [::]:port, dual-stack, instead of 0.0.0.0:port
  int fd;
  int err;
  const char* failed_call;
};

int open_udp_here(int port, bool ipv6, const char** failed_call) {
  int fd = socket(ipv6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    *failed_call = "socket";
    return -errno;
  }
  int size = kSocketBufBytes;
  // FORCE needs CAP_NET_ADMIN (the agent has it); fall back to the capped variant without it.
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) < 0) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  PeerAddr addr;
  memset(&addr, 0, sizeof addr);
  if (ipv6) {
    // Explicitly dual-stack, whatever net.ipv6.bindv6only says: IPv4 peers of a dual-stack
    // network reach the same socket.
    int off = 0;
    if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off) < 0) {
      int err = errno;
      close(fd);
      *failed_call = "setsockopt IPV6_V6ONLY";
      return -err;
    }
    addr.u.v6.sin6_family = AF_INET6;
    addr.u.v6.sin6_port = htons(static_cast<uint16_t>(port));
    addr.u.v6.sin6_addr = in6addr_any;
    addr.len = sizeof addr.u.v6;
  } else {
    addr.u.v4.sin_family = AF_INET;
    addr.u.v4.sin_port = htons(static_cast<uint16_t>(port));
    addr.u.v4.sin_addr.s_addr = htonl(INADDR_ANY);
    addr.len = sizeof addr.u.v4;
  }
  if (bind(fd, &addr.u.sa, addr.len) < 0) {
    int err = errno;
    close(fd);
    *failed_call = "bind";
    return -err;
  }
  return fd;
}

// A socket belongs to the namespace of the thread that created it. A short-lived thread does the
// setns so the JS thread never changes namespace, even for a moment.
void* socket_thread(void* arg) {
  SocketJob* job = static_cast<SocketJob*>(arg);
  if (job->ns_path) {
    int ns = open(job->ns_path, O_RDONLY | O_CLOEXEC);
    if (ns < 0) {
      job->err = errno;
      job->failed_call = "open namespace";
      return nullptr;
    }
    // unshare(CLONE_FS) is not needed: only the network namespace changes, and the thread ends.
    if (setns(ns, CLONE_NEWNET) < 0) {
      job->err = errno;
      job->failed_call = "setns";
      close(ns);
      return nullptr;
    }
    close(ns);
  }
  int fd = open_udp_here(job->port, job->ipv6, &job->failed_call);
  if (fd < 0) {
    job->err = -fd;
    return nullptr;
  }
  job->fd = fd;
  return nullptr;
}

// ---- exports -----------------------------------------------------------------------------

bool get_pump(napi_env env, napi_value v, Pump** out) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  void* data = nullptr;
  if (t != napi_external || napi_get_value_external(env, v, &data) != napi_ok || !data) {
    napi_throw_type_error(env, nullptr, "pump must be a handle from udpPumpStart");
    return false;
  }
  *out = static_cast<Pump*>(data);
  return true;
}

// The one argument of a call that takes only the pump; throws `usage` when it is missing.
bool get_only_pump(napi_env env, napi_callback_info info, const char* usage, Pump** out) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc < 1) {
    napi_throw_type_error(env, nullptr, usage);
    return false;
  }
  return get_pump(env, argv[0], out);
}

// udpPumpStart(tunFd: number, port: number, nsPath: string | null, offload?: boolean,
//              ipv6?: boolean): handle
// offload: the TUN fd was opened with IFF_VNET_HDR; TSO is switched on for it and UDP GRO on the
// socket.
// The UDP socket is bound to 0.0.0.0:port inside nsPath's namespace, or with ipv6 to [::]:port
// (dual-stack: peers of both families). The TUN fd stays the caller's: it must outlive the pump
// (close it after udpPumpStop).
napi_value Start(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc < 2) {
    napi_throw_type_error(env, nullptr, "udpPumpStart(tunFd, port, nsPath, offload, ipv6)");
    return nullptr;
  }
  int32_t tun_fd, port;
  if (!arg_int(env, argv[0], &tun_fd, "tunFd") || !arg_int(env, argv[1], &port, "port")) return nullptr;
  if (port < 1 || port > 65535) {
    napi_throw_range_error(env, nullptr, "port must be 1..65535");
    return nullptr;
  }
  char ns_path[4096];
  bool in_ns = false;
  if (argc >= 3) {
    napi_valuetype t;
    napi_typeof(env, argv[2], &t);
    if (t == napi_string) {
      size_t len = 0;
      napi_get_value_string_utf8(env, argv[2], ns_path, sizeof ns_path, &len);
      in_ns = len > 0;
    } else if (t != napi_null && t != napi_undefined) {
      napi_throw_type_error(env, nullptr, "nsPath must be a string or null");
      return nullptr;
    }
  }

  bool offload = false, ipv6 = false;
  if (argc >= 4) {
    napi_valuetype t;
    napi_typeof(env, argv[3], &t);
    if (t == napi_boolean) napi_get_value_bool(env, argv[3], &offload);
  }
  if (argc >= 5) {
    napi_valuetype t;
    napi_typeof(env, argv[4], &t);
    if (t == napi_boolean) napi_get_value_bool(env, argv[4], &ipv6);
  }

  SocketJob job = {in_ns ? ns_path : nullptr, port, ipv6, -1, 0, nullptr};
  pthread_t helper;
  int err = pthread_create(&helper, nullptr, socket_thread, &job);
  if (err) {
    throw_errno(env, err, "pthread_create", nullptr);
    return nullptr;
  }
  pthread_join(helper, nullptr);
  if (job.fd < 0) {
    char subject[4200];
    snprintf(subject, sizeof subject, "%s:%d%s%s", ipv6 ? "[::]" : "0.0.0.0", port, in_ns ? " in " : "", in_ns ? ns_path : "");
    throw_errno(env, job.err, job.failed_call, subject);
    return nullptr;
  }

  int flags = fcntl(tun_fd, F_GETFL);
  if (flags < 0 || fcntl(tun_fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    err = errno;
    close(job.fd);
    throw_errno(env, err, "fcntl O_NONBLOCK", "tun fd");
    return nullptr;
  }

  if (offload) {
    unsigned int features = TUN_F_CSUM | TUN_F_TSO4 | (ipv6 ? TUN_F_TSO6 : 0);
    int one = 1;
    if (ioctl(tun_fd, TUNSETOFFLOAD, features) < 0) {
      err = errno;
      close(job.fd);
      throw_errno(env, err, "ioctl TUNSETOFFLOAD", "tun fd");
      return nullptr;
    }
    if (setsockopt(job.fd, SOL_UDP, UDP_GRO, &one, sizeof one) < 0) {
      err = errno;
      close(job.fd);
      throw_errno(env, err, "setsockopt UDP_GRO", nullptr);
      return nullptr;
    }
  }

  Pump* pump = new Pump();
  pump->offload = offload;
  pump->tun_fd = tun_fd;
  pump->sock_fd = job.fd;
  pump->sock_family = ipv6 ? AF_INET6 : AF_INET;
  pump->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (pump->stop_fd < 0) {
    err = errno;
    stop_pump(pump);
    delete pump;
    throw_errno(env, err, "eventfd", nullptr);
    return nullptr;
  }
  err = pthread_create(&pump->tx_thread, nullptr, offload ? tx_offload_main : tx_main, pump);
  if (!err) {
    // Names show up in top -H and perf, so the pump's CPU is visible apart from Node's threads.
    pthread_setname_np(pump->tx_thread, "weft-udp-tx");
    pump->tx_started = true;
    err = pthread_create(&pump->rx_thread, nullptr, offload ? rx_offload_main : rx_main, pump);
    if (!err) {
      pthread_setname_np(pump->rx_thread, "weft-udp-rx");
      pump->rx_started = true;
    }
  }
  if (err) {
    stop_pump(pump);
    delete pump;
    throw_errno(env, err, "pthread_create", nullptr);
    return nullptr;
  }
  napi_value handle;
  napi_create_external(env, pump, finalize_pump, nullptr, &handle);
  return handle;
}

// udpPumpSetRoutes(pump, table: Uint8Array): number — swaps in a whole new peer table.
napi_value SetRoutes(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  Pump* pump;
  if (argc < 2 || !get_pump(env, argv[0], &pump)) {
    if (argc < 2) napi_throw_type_error(env, nullptr, "udpPumpSetRoutes(pump, table)");
    return nullptr;
  }
  bool is_ta = false;
  napi_is_typedarray(env, argv[1], &is_ta);
  napi_typedarray_type type = napi_int8_array;
  void* data = nullptr;
  size_t len = 0;
  if (is_ta) {
    napi_value ab;
    size_t offset;
    napi_get_typedarray_info(env, argv[1], &type, &len, &data, &ab, &offset);
  }
  if (!is_ta || type != napi_uint8_array) {
    napi_throw_type_error(env, nullptr, "table must be a Uint8Array");
    return nullptr;
  }
  const char* why = nullptr;
  std::shared_ptr<Table> table = parse_table(static_cast<const uint8_t*>(data), len, pump->sock_family, &why);
  if (!table) {
    napi_throw_range_error(env, nullptr, why);
    return nullptr;
  }
  size_t count = table->size();
  {
    std::lock_guard<std::mutex> lock(pump->table_mu);
    pump->table = std::move(table);
    pump->table_version.fetch_add(1, std::memory_order_release);
  }
  napi_value result;
  napi_create_uint32(env, static_cast<uint32_t>(count), &result);
  return result;
}

// udpPumpStats(pump): { txPackets, txBytes, rxPackets, ... } as numbers (exact below 2^53).
napi_value Stats(napi_env env, napi_callback_info info) {
  Pump* pump;
  if (!get_only_pump(env, info, "udpPumpStats(pump)", &pump)) return nullptr;
  napi_value result;
  napi_create_object(env, &result);
  for (int i = 0; i < kCounterCount; i++) {
    napi_value v;
    napi_create_double(env, static_cast<double>(pump->counters[i].load(std::memory_order_relaxed)), &v);
    napi_set_named_property(env, result, kCounterNames[i], v);
  }
  return result;
}

// udpPumpStop(pump): void — joins both threads and closes the socket; idempotent.
napi_value Stop(napi_env env, napi_callback_info info) {
  Pump* pump;
  if (!get_only_pump(env, info, "udpPumpStop(pump)", &pump)) return nullptr;
  stop_pump(pump);
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

// tunSetPersist(fd: number, persist: boolean): void — a persistent TUN device outlives its fds,
// so an agent restart finds it (and its address and routes) in place.
napi_value SetPersist(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int32_t fd;
  if (argc < 2) {
    napi_throw_type_error(env, nullptr, "tunSetPersist(fd, persist)");
    return nullptr;
  }
  if (!arg_int(env, argv[0], &fd, "fd")) return nullptr;
  bool persist = false;
  if (napi_get_value_bool(env, argv[1], &persist) != napi_ok) {
    napi_throw_type_error(env, nullptr, "persist must be a boolean");
    return nullptr;
  }
  if (ioctl(fd, TUNSETPERSIST, persist ? 1 : 0) < 0) {
    throw_errno(env, errno, "ioctl TUNSETPERSIST", nullptr);
    return nullptr;
  }
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

// ---- pure entry points for tests ---------------------------------------------------------
//
// The tx lookup, the rx check, TSO segmentation and receive coalescing, run on bytes from JS with
// no thread, socket or device: unit tests exercise the very code the pump threads run.

bool get_bytes(napi_env env, napi_value v, const uint8_t** data, size_t* len, const char* what) {
  bool is_ta = false;
  napi_is_typedarray(env, v, &is_ta);
  napi_typedarray_type type = napi_int8_array;
  void* p = nullptr;
  if (is_ta) {
    napi_value ab;
    size_t offset;
    napi_get_typedarray_info(env, v, &type, len, &p, &ab, &offset);
  }
  if (!is_ta || type != napi_uint8_array) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s must be a Uint8Array", what);
    napi_throw_type_error(env, nullptr, msg);
    return false;
  }
  *data = static_cast<const uint8_t*>(p);
  return true;
}

napi_value bytes_value(napi_env env, const uint8_t* p, size_t len) {
  void* dst = nullptr;
  napi_value ab, out;
  napi_create_arraybuffer(env, len, &dst, &ab);
  if (len) memcpy(dst, p, len);
  napi_create_typedarray(env, napi_uint8_array, len, ab, 0, &out);
  return out;
}

napi_value string_value(napi_env env, const char* s) {
  napi_value v;
  napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v);
  return v;
}

void set_number(napi_env env, napi_value obj, const char* name, double n) {
  napi_value v;
  napi_create_double(env, n, &v);
  napi_set_named_property(env, obj, name, v);
}

// udpPumpRouteFor(table, packet, ipv6Socket): { address, port } | "noRoute" | "malformed" — where
// the tx thread would send this inner packet (address as the socket writes it: v4-mapped for an
// IPv4 peer behind the dual-stack socket).
napi_value RouteFor(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  const uint8_t *table_bytes, *pkt;
  size_t table_len, pkt_len;
  bool ipv6 = false;
  if (argc < 3) {
    napi_throw_type_error(env, nullptr, "udpPumpRouteFor(table, packet, ipv6Socket)");
    return nullptr;
  }
  if (!get_bytes(env, argv[0], &table_bytes, &table_len, "table") || !get_bytes(env, argv[1], &pkt, &pkt_len, "packet")) return nullptr;
  napi_get_value_bool(env, argv[2], &ipv6);
  const char* why = nullptr;
  std::shared_ptr<Table> t = parse_table(table_bytes, table_len, ipv6 ? AF_INET6 : AF_INET, &why);
  if (!t) {
    napi_throw_range_error(env, nullptr, why);
    return nullptr;
  }
  const PeerAddr* peer = nullptr;
  Verdict v = route_packet(*t, pkt, pkt_len, &peer);
  if (v == kNoRoute) return string_value(env, "noRoute");
  if (v == kMalformed) return string_value(env, "malformed");
  char text[INET6_ADDRSTRLEN];
  bool is6 = peer->u.sa.sa_family == AF_INET6;
  inet_ntop(peer->u.sa.sa_family, is6 ? static_cast<const void*>(&peer->u.v6.sin6_addr) : static_cast<const void*>(&peer->u.v4.sin_addr), text, sizeof text);
  napi_value out;
  napi_create_object(env, &out);
  napi_set_named_property(env, out, "address", string_value(env, text));
  set_number(env, out, "port", ntohs(is6 ? peer->u.v6.sin6_port : peer->u.v4.sin_port));
  return out;
}

// udpPumpWholePacket(datagram): boolean — whether the rx threads take this datagram.
napi_value WholePacket(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  const uint8_t* p;
  size_t len;
  if (argc < 1 || !get_bytes(env, argv[0], &p, &len, "datagram")) return nullptr;
  napi_value out;
  napi_get_boolean(env, whole_packet(p, len), &out);
  return out;
}

// udpPumpSegment(packet, mss): Uint8Array[] | null — the datagrams tx_offload_main sends for a
// TSO super-packet (null: refused as malformed).
napi_value Segment(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  const uint8_t* p;
  size_t len;
  int32_t mss;
  if (argc < 2 || !get_bytes(env, argv[0], &p, &len, "packet") || !arg_int(env, argv[1], &mss, "mss")) return nullptr;
  std::vector<uint8_t> pkt(p, p + len);
  std::vector<uint8_t> hdrs(kMaxTsoSegments * kMaxHeaderBytes);
  std::vector<struct iovec> iov(2 * kMaxTsoSegments);
  size_t seg = 0;
  size_t count = segment_tcp(pkt.data(), len, static_cast<uint16_t>(mss), hdrs.data(), iov.data(), kMaxTsoSegments, &seg);
  napi_value out;
  if (!count) {
    napi_get_null(env, &out);
    return out;
  }
  napi_create_array_with_length(env, count, &out);
  for (size_t i = 0; i < count; i++) {
    std::vector<uint8_t> d(static_cast<uint8_t*>(iov[2 * i].iov_base), static_cast<uint8_t*>(iov[2 * i].iov_base) + iov[2 * i].iov_len);
    d.insert(d.end(), static_cast<uint8_t*>(iov[2 * i + 1].iov_base), static_cast<uint8_t*>(iov[2 * i + 1].iov_base) + iov[2 * i + 1].iov_len);
    napi_set_element(env, out, static_cast<uint32_t>(i), bytes_value(env, d.data(), d.size()));
  }
  return out;
}

// udpPumpCoalesce(datagrams: Uint8Array[]): { flags, gsoType, hdrLen, gsoSize, csumStart,
// csumOffset, packet }[] — the TUN writes rx_offload_main makes for one receive batch.
napi_value Coalesce(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  bool is_array = false;
  if (argc >= 1) napi_is_array(env, argv[0], &is_array);
  if (!is_array) {
    napi_throw_type_error(env, nullptr, "udpPumpCoalesce(datagrams: Uint8Array[])");
    return nullptr;
  }
  uint32_t n = 0;
  napi_get_array_length(env, argv[0], &n);
  std::vector<std::vector<uint8_t>> in(n);
  for (uint32_t i = 0; i < n; i++) {
    napi_value e;
    napi_get_element(env, argv[0], i, &e);
    const uint8_t* p;
    size_t len;
    if (!get_bytes(env, e, &p, &len, "datagram")) return nullptr;
    in[i].assign(p, p + len);
  }
  std::vector<std::vector<uint8_t>> writes;
  std::unique_ptr<Pump> pump(new Pump());
  pump->capture = &writes;
  std::unique_ptr<Coalescer> co(new Coalescer());
  RxTally t;
  for (auto& d : in) {
    if (whole_packet(d.data(), d.size())) co->add(pump.get(), d.data(), d.size(), &t);
  }
  co->flush_all(pump.get(), &t);
  napi_value out;
  napi_create_array_with_length(env, writes.size(), &out);
  for (size_t i = 0; i < writes.size(); i++) {
    const std::vector<uint8_t>& w = writes[i];
    struct virtio_net_hdr vh;
    memcpy(&vh, w.data(), kVnetHdr);
    napi_value o;
    napi_create_object(env, &o);
    set_number(env, o, "flags", vh.flags);
    set_number(env, o, "gsoType", vh.gso_type);
    set_number(env, o, "hdrLen", vh.hdr_len);
    set_number(env, o, "gsoSize", vh.gso_size);
    set_number(env, o, "csumStart", vh.csum_start);
    set_number(env, o, "csumOffset", vh.csum_offset);
    napi_set_named_property(env, o, "packet", bytes_value(env, w.data() + kVnetHdr, w.size() - kVnetHdr));
    napi_set_element(env, out, static_cast<uint32_t>(i), o);
  }
  return out;
}

}  // namespace weft_udp

// Called from weft_native.cc's Init.
void weft_udp_pump_register(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      {"udpPumpStart", nullptr, weft_udp::Start, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"udpPumpSetRoutes", nullptr, weft_udp::SetRoutes, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"udpPumpStats", nullptr, weft_udp::Stats, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"udpPumpStop", nullptr, weft_udp::Stop, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"tunSetPersist", nullptr, weft_udp::SetPersist, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"udpPumpRouteFor", nullptr, weft_udp::RouteFor, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"udpPumpWholePacket", nullptr, weft_udp::WholePacket, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"udpPumpSegment", nullptr, weft_udp::Segment, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"udpPumpCoalesce", nullptr, weft_udp::Coalesce, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
