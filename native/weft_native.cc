// weft_native: the few system calls Node cannot make. Everything here is a thin wrapper; the
// netlink codec, retries and policy live in TypeScript (src/netlink, src/netns).
//
// Network namespaces are per thread. Functions that act "inside" a namespace switch the calling
// thread with setns(), do one thing, and switch back before returning — on every path, including
// errors. If switching back ever fails the process would keep running in the wrong namespace, so
// that is treated as fatal.
//
// Written against the plain C N-API (node_api.h) so there is no dependency beyond Node's headers.

#include <node_api.h>
#include <uv.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <stdio.h>
#include <stdlib.h>

// Defined in udp_pump.cc: adds the udp backend's packet pump functions to the exports.
void weft_udp_pump_register(napi_env env, napi_value exports);

#ifndef NETLINK_EXT_ACK
#define NETLINK_EXT_ACK 11
#endif
#ifndef NETLINK_GET_STRICT_CHK
#define NETLINK_GET_STRICT_CHK 12
#endif

namespace {

const size_t kPathMax = 4096;
const int kRecvBufBytes = 4 * 1024 * 1024;

// ---- errors -------------------------------------------------------------------------------

const char* errno_code(int err) {
  switch (err) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case ESRCH: return "ESRCH";
    case EINTR: return "EINTR";
    case EIO: return "EIO";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case ENODEV: return "ENODEV";
    case ENOTDIR: return "ENOTDIR";
    case EINVAL: return "EINVAL";
    case EMFILE: return "EMFILE";
    case ENOSPC: return "ENOSPC";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EPROTONOSUPPORT: return "EPROTONOSUPPORT";
    case ENOBUFS: return "ENOBUFS";
    case ETIMEDOUT: return "ETIMEDOUT";
    default: return "EUNKNOWN";
  }
}

// Throws a JS Error with .code (e.g. "ENOENT"), .errno (positive number) and .syscall.
void throw_errno(napi_env env, int err, const char* syscall, const char* subject) {
  char msg[kPathMax + 256];
  if (subject && subject[0]) {
    snprintf(msg, sizeof msg, "%s %s: %s", syscall, subject, strerror(err));
  } else {
    snprintf(msg, sizeof msg, "%s: %s", syscall, strerror(err));
  }
  napi_value code, message, error, errno_value, syscall_value;
  napi_create_string_utf8(env, errno_code(err), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_create_int32(env, err, &errno_value);
  napi_set_named_property(env, error, "errno", errno_value);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &syscall_value);
  napi_set_named_property(env, error, "syscall", syscall_value);
  napi_throw(env, error);
}

void throw_type(napi_env env, const char* msg) { napi_throw_type_error(env, nullptr, msg); }

// ---- argument helpers ---------------------------------------------------------------------

bool get_args(napi_env env, napi_callback_info info, size_t want, napi_value* argv, size_t* argc_out) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok) return false;
  for (size_t i = argc; i < want; i++) napi_get_undefined(env, &argv[i]);
  if (argc_out) *argc_out = argc;
  return true;
}

// Reads a string argument into buf. Returns false (with a pending exception) on bad input.
bool get_string(napi_env env, napi_value v, char* buf, size_t cap, const char* what) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t != napi_string) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s must be a string", what);
    throw_type(env, msg);
    return false;
  }
  size_t len = 0;
  napi_get_value_string_utf8(env, v, nullptr, 0, &len);
  if (len == 0 || len >= cap) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s must be a non-empty string shorter than %zu bytes", what, cap);
    throw_type(env, msg);
    return false;
  }
  napi_get_value_string_utf8(env, v, buf, cap, &len);
  return true;
}

// A namespace path argument: a string, or null/undefined for "the calling thread's namespace".
bool get_ns_path(napi_env env, napi_value v, char* buf, bool* present) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t == napi_null || t == napi_undefined) {
    *present = false;
    return true;
  }
  *present = true;
  return get_string(env, v, buf, kPathMax, "namespace path");
}

bool get_int(napi_env env, napi_value v, int32_t* out, const char* what) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t != napi_number) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s must be a number", what);
    throw_type(env, msg);
    return false;
  }
  napi_get_value_int32(env, v, out);
  return true;
}

bool get_bytes(napi_env env, napi_value v, void** data, size_t* len) {
  bool is_ta = false;
  napi_is_typedarray(env, v, &is_ta);
  if (!is_ta) {
    throw_type(env, "buffer must be a Buffer or Uint8Array");
    return false;
  }
  napi_typedarray_type type;
  napi_value ab;
  size_t offset;
  napi_get_typedarray_info(env, v, &type, len, data, &ab, &offset);
  if (type != napi_uint8_array) {
    throw_type(env, "buffer must be a Buffer or Uint8Array");
    return false;
  }
  return true;
}

napi_value make_int(napi_env env, int64_t n) {
  napi_value v;
  napi_create_int64(env, n, &v);
  return v;
}

napi_value undefined(napi_env env) {
  napi_value v;
  napi_get_undefined(env, &v);
  return v;
}

// ---- namespace switching -----------------------------------------------------------------

// Moves the calling thread into the network namespace at path, remembering where it was.
// Returns 0 or an errno; on error the thread has not moved.
struct NsSwitch {
  int original = -1;
  const char* failed_call = nullptr;
};

int enter_netns(const char* path, NsSwitch* sw) {
  sw->original = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (sw->original < 0) {
    sw->failed_call = "open /proc/thread-self/ns/net";
    return errno;
  }
  int target = open(path, O_RDONLY | O_CLOEXEC);
  if (target < 0) {
    int err = errno;
    close(sw->original);
    sw->original = -1;
    sw->failed_call = "open";
    return err;
  }
  if (setns(target, CLONE_NEWNET) < 0) {
    int err = errno;
    close(target);
    close(sw->original);
    sw->original = -1;
    sw->failed_call = "setns";
    return err;
  }
  close(target);
  return 0;
}

// The binding side of enter_netns: switches when in_ns, and on failure throws the errno naming
// the call and the path. Returns false when it threw (the thread has not moved).
bool enter_netns_or_throw(napi_env env, bool in_ns, const char* path, NsSwitch* sw) {
  if (!in_ns) return true;
  int err = enter_netns(path, sw);
  if (err) {
    throw_errno(env, err, sw->failed_call, path);
    return false;
  }
  return true;
}

void leave_netns(NsSwitch* sw) {
  if (sw->original < 0) return;
  if (setns(sw->original, CLONE_NEWNET) < 0) {
    // Continuing would run every later socket/sysctl of this thread in a foreign namespace.
    napi_fatal_error("weft_native", NAPI_AUTO_LENGTH,
                     "could not return the thread to its original network namespace", NAPI_AUTO_LENGTH);
  }
  close(sw->original);
  sw->original = -1;
}

// ---- netlink sockets ----------------------------------------------------------------------

int open_netlink_here(int protocol, int timeout_ms, const char** failed_call) {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, protocol);
  if (fd < 0) {
    *failed_call = "socket";
    return -errno;
  }
  // A dump of thousands of routes arrives faster than JS reads it; a big buffer avoids ENOBUFS.
  int rcvbuf = kRecvBufBytes;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  }
  int one = 1;
  // Extended ACKs carry the kernel's human-readable reason for a failure. Best effort: older
  // kernels or other protocols may not support them.
  setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
  if (protocol == NETLINK_ROUTE) {
    // Strict checking makes the kernel honour filters in dump requests (ifindex, table, ...).
    setsockopt(fd, SOL_NETLINK, NETLINK_GET_STRICT_CHK, &one, sizeof one);
  }
  struct timeval tv;
  tv.tv_sec = timeout_ms / 1000;
  tv.tv_usec = (timeout_ms % 1000) * 1000;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0) {
    int err = errno;
    close(fd);
    *failed_call = "setsockopt SO_RCVTIMEO";
    return -err;
  }
  struct sockaddr_nl addr;
  memset(&addr, 0, sizeof addr);
  addr.nl_family = AF_NETLINK;
  if (bind(fd, reinterpret_cast<struct sockaddr*>(&addr), sizeof addr) < 0) {
    int err = errno;
    close(fd);
    *failed_call = "bind";
    return -err;
  }
  return fd;
}

// openNetlinkSocket(nsPath: string | null, protocol: number, timeoutMs?: number): number
napi_value OpenNetlinkSocket(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv, nullptr)) return nullptr;
  char path[kPathMax];
  bool in_ns = false;
  int32_t protocol = 0, timeout_ms = 5000;
  if (!get_ns_path(env, argv[0], path, &in_ns)) return nullptr;
  if (!get_int(env, argv[1], &protocol, "protocol")) return nullptr;
  napi_valuetype t;
  napi_typeof(env, argv[2], &t);
  if (t != napi_undefined && !get_int(env, argv[2], &timeout_ms, "timeoutMs")) return nullptr;
  if (timeout_ms <= 0) {
    throw_type(env, "timeoutMs must be positive");
    return nullptr;
  }

  NsSwitch sw;
  if (!enter_netns_or_throw(env, in_ns, path, &sw)) return nullptr;
  const char* failed_call = nullptr;
  int fd = open_netlink_here(protocol, timeout_ms, &failed_call);
  leave_netns(&sw);
  if (fd < 0) {
    throw_errno(env, -fd, failed_call, in_ns ? path : nullptr);
    return nullptr;
  }
  return make_int(env, fd);
}

// send(fd: number, buf: Uint8Array): number — sends one datagram to the kernel (port 0).
napi_value Send(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv, nullptr)) return nullptr;
  int32_t fd;
  void* data;
  size_t len;
  if (!get_int(env, argv[0], &fd, "fd") || !get_bytes(env, argv[1], &data, &len)) return nullptr;
  struct sockaddr_nl kernel;
  memset(&kernel, 0, sizeof kernel);
  kernel.nl_family = AF_NETLINK;
  ssize_t n;
  do {
    n = sendto(fd, data, len, 0, reinterpret_cast<struct sockaddr*>(&kernel), sizeof kernel);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    throw_errno(env, errno, "sendto", nullptr);
    return nullptr;
  }
  return make_int(env, n);
}

// recv(fd: number, buf: Uint8Array, dontWait?: boolean): number — blocks up to the socket's
// timeout. Returns the datagram's full length, which exceeds buf.length when it was truncated
// (MSG_TRUNC). With dontWait it never blocks and returns -1 when nothing is queued (event
// sockets drain this way when watchReadable says there is data).
napi_value Recv(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv, nullptr)) return nullptr;
  int32_t fd;
  void* data;
  size_t len;
  if (!get_int(env, argv[0], &fd, "fd") || !get_bytes(env, argv[1], &data, &len)) return nullptr;
  bool dont_wait = false;
  napi_valuetype t;
  napi_typeof(env, argv[2], &t);
  if (t == napi_boolean) napi_get_value_bool(env, argv[2], &dont_wait);
  ssize_t n;
  do {
    n = recv(fd, data, len, MSG_TRUNC | (dont_wait ? MSG_DONTWAIT : 0));
  } while (n < 0 && errno == EINTR);
  if (n < 0 && dont_wait && (errno == EAGAIN || errno == EWOULDBLOCK)) return make_int(env, -1);
  if (n < 0) {
    int err = errno == EWOULDBLOCK ? ETIMEDOUT : errno;
    throw_errno(env, err, "recv", nullptr);
    return nullptr;
  }
  return make_int(env, n);
}

// close(fd: number): void
napi_value Close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv, nullptr)) return nullptr;
  int32_t fd;
  if (!get_int(env, argv[0], &fd, "fd")) return nullptr;
  // close() must not be retried on EINTR on Linux: the descriptor is already gone.
  if (close(fd) < 0 && errno != EINTR) {
    throw_errno(env, errno, "close", nullptr);
    return nullptr;
  }
  return undefined(env);
}

// setSockOptInt(fd: number, level: number, name: number, value: number): void — an int option,
// e.g. NETLINK_ADD_MEMBERSHIP (SOL_NETLINK) to join a multicast group, or SO_RCVBUFFORCE.
napi_value SetSockOptInt(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv, nullptr)) return nullptr;
  int32_t fd, level, name, value;
  if (!get_int(env, argv[0], &fd, "fd") || !get_int(env, argv[1], &level, "level") ||
      !get_int(env, argv[2], &name, "name") || !get_int(env, argv[3], &value, "value")) {
    return nullptr;
  }
  int v = value;
  if (setsockopt(fd, level, name, &v, sizeof v) < 0) {
    throw_errno(env, errno, "setsockopt", nullptr);
    return nullptr;
  }
  return undefined(env);
}

// ---- readiness watch ------------------------------------------------------------------------

// Event sockets (conntrack events, NFLOG) must not block the JS thread, so the loop watches
// their fd (uv_poll, level-triggered) and calls back when it is readable; the callback drains
// the socket with recv(fd, buf, true) until it returns -1. Only readiness lives here: reading,
// decoding and error policy stay in TypeScript.
struct FdWatch {
  uv_poll_t poll;
  napi_env env = nullptr;
  napi_ref callback = nullptr;
  napi_async_context context = nullptr;
  bool stopped = false;    // unwatchReadable ran (or start failed): no more callbacks
  bool uv_closed = false;  // libuv is done with the handle
  bool finalized = false;  // the JS handle is gone
};

void free_watch_if_done(FdWatch* w) {
  if (w->uv_closed && w->finalized) delete w;
}

void on_watch_closed(uv_handle_t* h) {
  FdWatch* w = static_cast<FdWatch*>(h->data);
  napi_handle_scope scope;
  napi_open_handle_scope(w->env, &scope);
  if (w->callback) napi_delete_reference(w->env, w->callback);
  if (w->context) napi_async_destroy(w->env, w->context);
  napi_close_handle_scope(w->env, scope);
  w->callback = nullptr;
  w->context = nullptr;
  w->uv_closed = true;
  free_watch_if_done(w);
}

void finalize_watch(napi_env, void* data, void*) {
  FdWatch* w = static_cast<FdWatch*>(data);
  w->finalized = true;
  free_watch_if_done(w);
}

void on_readable(uv_poll_t* h, int status, int) {
  FdWatch* w = static_cast<FdWatch*>(h->data);
  if (w->stopped) return;
  napi_env env = w->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value cb, self, arg, result;
  napi_get_reference_value(env, w->callback, &cb);
  napi_get_global(env, &self);  // napi_make_callback needs an object as receiver
  // 0, or the positive errno of a poll error (libuv reports a socket error, such as a netlink
  // overrun's ENOBUFS, as UV_EBADF and stops the handle).
  napi_create_int32(env, status < 0 ? -status : 0, &arg);
  napi_make_callback(env, w->context, self, cb, 1, &arg, &result);
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (pending) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
  // After a poll error libuv has stopped the handle; the callback has read the error (recv
  // clears a socket's pending error), so watch again unless it asked us to stop.
  if (status < 0 && !w->stopped) {
    int rc = uv_poll_start(&w->poll, UV_READABLE, on_readable);
    if (rc < 0) {
      napi_create_int32(env, -rc, &arg);
      napi_make_callback(env, w->context, self, cb, 1, &arg, &result);
      napi_is_exception_pending(env, &pending);
      if (pending) {
        napi_value err;
        napi_get_and_clear_last_exception(env, &err);
        napi_fatal_exception(env, err);
      }
    }
  }
  napi_close_handle_scope(env, scope);
}

// watchReadable(fd: number, callback: (errno: number) => void): handle — calls back on the JS
// thread whenever fd has data (errno 0) or a pending error (errno > 0). libuv makes fd
// non-blocking. The watch keeps the event loop alive until unwatchReadable(handle); stop it
// before closing fd.
napi_value WatchReadable(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv, nullptr)) return nullptr;
  int32_t fd;
  if (!get_int(env, argv[0], &fd, "fd")) return nullptr;
  napi_valuetype t;
  napi_typeof(env, argv[1], &t);
  if (t != napi_function) {
    throw_type(env, "callback must be a function");
    return nullptr;
  }
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    throw_type(env, "no event loop");
    return nullptr;
  }
  FdWatch* w = new FdWatch();
  w->env = env;
  int rc = uv_poll_init(loop, &w->poll, fd);
  if (rc < 0) {
    delete w;
    throw_errno(env, -rc, "uv_poll_init", nullptr);
    return nullptr;
  }
  w->poll.data = w;
  napi_value name;
  napi_create_string_utf8(env, "weft:netlink-watch", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, nullptr, name, &w->context);
  napi_create_reference(env, argv[1], 1, &w->callback);
  rc = uv_poll_start(&w->poll, UV_READABLE, on_readable);
  if (rc < 0) {
    w->stopped = true;
    w->finalized = true;  // no JS handle will ever own it
    uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), on_watch_closed);
    throw_errno(env, -rc, "uv_poll_start", nullptr);
    return nullptr;
  }
  napi_value handle;
  napi_create_external(env, w, finalize_watch, nullptr, &handle);
  return handle;
}

// unwatchReadable(handle): void — idempotent; no callback runs after it returns.
napi_value UnwatchReadable(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv, nullptr)) return nullptr;
  napi_valuetype t;
  napi_typeof(env, argv[0], &t);
  if (t != napi_external) {
    throw_type(env, "handle must come from watchReadable");
    return nullptr;
  }
  void* data = nullptr;
  napi_get_value_external(env, argv[0], &data);
  FdWatch* w = static_cast<FdWatch*>(data);
  if (!w->stopped) {
    w->stopped = true;
    uv_poll_stop(&w->poll);
    // References and the async context are released in the close callback, outside any
    // callback that may be running for this watch right now.
    uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), on_watch_closed);
  }
  return undefined(env);
}

// ---- persistent named namespaces ----------------------------------------------------------

// `ip netns add` makes the run directory a shared mount point so that namespace mounts made
// later propagate into mount namespaces created by `ip netns exec`. We do the same so the two
// tools interoperate.
int prepare_run_dir(const char* dir, const char** failed_call) {
  if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
    *failed_call = "mkdir";
    return errno;
  }
  if (mount("", dir, "none", MS_SHARED | MS_REC, nullptr) == 0) return 0;
  if (errno != EINVAL) {
    *failed_call = "mount --make-rshared";
    return errno;
  }
  // Not a mount point yet: bind it onto itself, then it can be made shared.
  if (mount(dir, dir, "none", MS_BIND | MS_REC, nullptr) < 0) {
    *failed_call = "mount --bind";
    return errno;
  }
  if (mount("", dir, "none", MS_SHARED | MS_REC, nullptr) < 0) {
    *failed_call = "mount --make-rshared";
    return errno;
  }
  return 0;
}

struct NewNsJob {
  const char* path;
  int err;
  const char* failed_call;
};

// Runs on a short-lived thread so the caller's thread never leaves its namespace: the new
// namespace lives on through the bind mount after this thread exits.
void* make_netns_thread(void* arg) {
  NewNsJob* job = static_cast<NewNsJob*>(arg);
  if (unshare(CLONE_NEWNET) < 0) {
    job->err = errno;
    job->failed_call = "unshare";
    return nullptr;
  }
  if (mount("/proc/thread-self/ns/net", job->path, "none", MS_BIND, nullptr) < 0) {
    job->err = errno;
    job->failed_call = "mount --bind";
    return nullptr;
  }
  job->err = 0;
  return nullptr;
}

// createNetns(path: string): void — path's directory is created (and made a shared mount).
napi_value CreateNetns(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv, nullptr)) return nullptr;
  char path[kPathMax];
  if (!get_string(env, argv[0], path, sizeof path, "path")) return nullptr;
  char dir[kPathMax];
  memcpy(dir, path, sizeof dir);
  char* slash = strrchr(dir, '/');
  if (!slash || slash == dir || slash[1] == '\0') {
    throw_type(env, "path must be an absolute file path below a directory, e.g. /run/netns/x");
    return nullptr;
  }
  *slash = '\0';

  const char* failed_call = nullptr;
  int err = prepare_run_dir(dir, &failed_call);
  if (err) {
    throw_errno(env, err, failed_call, dir);
    return nullptr;
  }
  int fd = open(path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0);
  if (fd < 0) {
    throw_errno(env, errno, "open", path);
    return nullptr;
  }
  close(fd);

  NewNsJob job = {path, 0, nullptr};
  pthread_t thread;
  err = pthread_create(&thread, nullptr, make_netns_thread, &job);
  if (err) {
    unlink(path);
    throw_errno(env, err, "pthread_create", nullptr);
    return nullptr;
  }
  pthread_join(thread, nullptr);
  if (job.err) {
    unlink(path);
    throw_errno(env, job.err, job.failed_call, path);
    return nullptr;
  }
  return undefined(env);
}

// deleteNetns(path: string): void — detaches the bind mount and removes the file. The namespace
// itself goes away once no process or socket holds it.
napi_value DeleteNetns(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv, nullptr)) return nullptr;
  char path[kPathMax];
  if (!get_string(env, argv[0], path, sizeof path, "path")) return nullptr;
  // EINVAL: not a mount point (e.g. a leftover file from an interrupted create) — still unlink.
  if (umount2(path, MNT_DETACH) < 0 && errno != EINVAL) {
    throw_errno(env, errno, "umount2", path);
    return nullptr;
  }
  if (unlink(path) < 0) {
    throw_errno(env, errno, "unlink", path);
    return nullptr;
  }
  return undefined(env);
}

// ---- sysctl -------------------------------------------------------------------------------

// Builds /proc/sys/<rel>, refusing anything that could climb out of /proc/sys.
bool sysctl_path(napi_env env, napi_value v, char* out) {
  char rel[kPathMax - 16];
  if (!get_string(env, v, rel, sizeof rel, "sysctl key path")) return false;
  if (rel[0] == '/' || strstr(rel, "..")) {
    throw_type(env, "sysctl key path must be relative to /proc/sys and must not contain '..'");
    return false;
  }
  snprintf(out, kPathMax, "/proc/sys/%s", rel);
  return true;
}

// readSysctl(nsPath: string | null, keyPath: string): string
napi_value ReadSysctl(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv, nullptr)) return nullptr;
  char ns[kPathMax], path[kPathMax];
  bool in_ns = false;
  if (!get_ns_path(env, argv[0], ns, &in_ns) || !sysctl_path(env, argv[1], path)) return nullptr;

  NsSwitch sw;
  if (!enter_netns_or_throw(env, in_ns, ns, &sw)) return nullptr;
  // /proc/sys/net resolves to the opening thread's namespace, so open while switched.
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  int err = fd < 0 ? errno : 0;
  leave_netns(&sw);
  if (fd < 0) {
    throw_errno(env, err, "open", path);
    return nullptr;
  }
  char buf[4096];
  size_t total = 0;
  for (;;) {
    ssize_t n = read(fd, buf + total, sizeof buf - 1 - total);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      err = errno;
      close(fd);
      throw_errno(env, err, "read", path);
      return nullptr;
    }
    if (n == 0 || total + n >= sizeof buf - 1) {
      total += n;
      break;
    }
    total += n;
  }
  close(fd);
  napi_value result;
  napi_create_string_utf8(env, buf, total, &result);
  return result;
}

// writeSysctl(nsPath: string | null, keyPath: string, value: string): void
napi_value WriteSysctl(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv, nullptr)) return nullptr;
  char ns[kPathMax], path[kPathMax], value[4096];
  bool in_ns = false;
  if (!get_ns_path(env, argv[0], ns, &in_ns) || !sysctl_path(env, argv[1], path) ||
      !get_string(env, argv[2], value, sizeof value, "sysctl value")) {
    return nullptr;
  }
  NsSwitch sw;
  if (!enter_netns_or_throw(env, in_ns, ns, &sw)) return nullptr;
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  int err = fd < 0 ? errno : 0;
  leave_netns(&sw);
  if (fd < 0) {
    throw_errno(env, err, "open", path);
    return nullptr;
  }
  size_t len = strlen(value);
  ssize_t n;
  do {
    n = write(fd, value, len);
  } while (n < 0 && errno == EINTR);
  err = n < 0 ? errno : 0;
  close(fd);
  if (n < 0) {
    throw_errno(env, err, "write", path);
    return nullptr;
  }
  if (static_cast<size_t>(n) != len) {
    throw_errno(env, EIO, "write (short)", path);
    return nullptr;
  }
  return undefined(env);
}

// ---- TUN ----------------------------------------------------------------------------------

// openTun(name: string, flags: number, nsPath?: string | null): { fd: number, name: string }
// flags are the IFF_* bits for TUNSETIFF (IFF_TUN or IFF_TAP, IFF_NO_PI, IFF_MULTI_QUEUE); the
// device is created in nsPath's namespace when given (a tun device belongs to the namespace of
// the thread that opened /dev/net/tun).
napi_value OpenTun(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv, nullptr)) return nullptr;
  char name[IFNAMSIZ + 1], ns[kPathMax];
  int32_t flags;
  bool in_ns = false;
  if (!get_string(env, argv[0], name, sizeof name - 1, "tun device name") ||
      !get_int(env, argv[1], &flags, "flags") || !get_ns_path(env, argv[2], ns, &in_ns)) {
    return nullptr;
  }
  if ((flags & (IFF_TUN | IFF_TAP)) == 0) {
    throw_type(env, "flags must include IFF_TUN or IFF_TAP");
    return nullptr;
  }
  NsSwitch sw;
  if (!enter_netns_or_throw(env, in_ns, ns, &sw)) return nullptr;
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  int err = fd < 0 ? errno : 0;
  const char* failed_call = "open /dev/net/tun";
  struct ifreq ifr;
  if (fd >= 0) {
    memset(&ifr, 0, sizeof ifr);
    // get_string bounded name to IFNAMSIZ - 1 bytes, so it fits with its terminator.
    memcpy(ifr.ifr_name, name, strnlen(name, IFNAMSIZ - 1));
    ifr.ifr_flags = static_cast<short>(flags);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
      err = errno;
      failed_call = "ioctl TUNSETIFF";
      close(fd);
      fd = -1;
    }
  }
  leave_netns(&sw);
  if (fd < 0) {
    throw_errno(env, err, failed_call, name);
    return nullptr;
  }
  napi_value result, fd_value, name_value;
  napi_create_object(env, &result);
  napi_create_int32(env, fd, &fd_value);
  napi_create_string_utf8(env, ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ), &name_value);
  napi_set_named_property(env, result, "fd", fd_value);
  napi_set_named_property(env, result, "name", name_value);
  return result;
}

napi_value Init(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      {"openNetlinkSocket", nullptr, OpenNetlinkSocket, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"send", nullptr, Send, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"recv", nullptr, Recv, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"close", nullptr, Close, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"setSockOptInt", nullptr, SetSockOptInt, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"watchReadable", nullptr, WatchReadable, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"unwatchReadable", nullptr, UnwatchReadable, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"createNetns", nullptr, CreateNetns, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"deleteNetns", nullptr, DeleteNetns, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"readSysctl", nullptr, ReadSysctl, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"writeSysctl", nullptr, WriteSysctl, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"openTun", nullptr, OpenTun, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  weft_udp_pump_register(env, exports);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
