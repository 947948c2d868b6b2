// Native front of the `weft` CNI plugin (dist/cni/weft.native, built by scripts/build.sh).
//
// Why C: a CNI plugin is one process per call, and a bare `node -e 0` already costs more than the
// reference bridge plugin's whole ADD. When weftd runs on the host it does the work in-process,
// so all the plugin process has to do is pipe {env, stdin} to weftd's socket and its answer back
// to stdout — this program. Anything it cannot do with certainty goes to the Node plugin, which
// holds every rule; this file holds none beyond finding the socket and moving bytes.
//
//   weft.native NODE MAIN      (bin/cni/weft: exec "$dist/cni/weft.native" node "$main")
//
// Finding the socket is src/cni/fastpath-client.ts's fastPathSocketFor, on the config's
// top-level keys: `"fastPath": false` → no fast path; a non-empty string `cniSocket` → that;
// else WEFT_CNI_SOCKET in the subnet file (`subnetFile`, default /run/weft/subnet.env; the last
// such line, surrounding quotes dropped); else cni.sock next to the subnet file. A config this
// scanner is unsure of (not an object, malformed, an escape in a top-level key or in one of those
// values) goes to Node untried, which decides with JSON.parse.
//
// Outcomes, as in fastpath-client.ts: answered → weftd's stdout and exit code are ours;
// unavailable (no socket, refused, no connection within 250 ms) or lost (weftd took the request
// but gave no complete answer) → exec NODE MAIN with the same stdin (replayed from a memfd) and
// WEFT_CNI_FASTPATH_OUTCOME="unavailable|lost <reason>", so the Node plugin does not try the
// socket again and applies its own rule (a lost ADD is code 11, not redone; the rest run locally).
// VERSION, help and a missing CNI_COMMAND go to Node straight away without touching stdin.
//
// Wire format: the request JSON of fastpath-client.ts plus "reply":"raw", after which weftd
// answers "<exitCode> <byteLength>\n<stdout bytes>" and closes: no JSON parser needed here, and
// a truncated answer (weftd died while writing) is recognisable by its length.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define CONNECT_TIMEOUT_MS 250
#define REPLY_TIMEOUT_MS 120000
#define MAX_STDIN (1 << 20) // weftd's own request limit; larger configs go to Node
#define DEFAULT_SUBNET_FILE "/run/weft/subnet.env"
#define MAX_SUBNET_FILE (64 * 1024) // MAX_SUBNET_FILE_BYTES in src/cni/subnet-env.ts

static const char *const FORWARDED_ENV[] = {"CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"};

struct buf { char *p; size_t len, cap; };

static void put(struct buf *b, const void *data, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (b->len + n + 1 > cap) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) { perror("weft.native"); exit(1); }
    b->p = p, b->cap = cap;
  }
  memcpy(b->p + b->len, data, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void puts_(struct buf *b, const char *s) { put(b, s, strlen(s)); }

static void put_json_string(struct buf *b, const char *s, size_t n) {
  put(b, "\"", 1);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    char esc[8];
    if (c == '"' || c == '\\') { esc[0] = '\\', esc[1] = (char)c; put(b, esc, 2); }
    else if (c < 0x20) { snprintf(esc, sizeof esc, "\\u%04x", c); put(b, esc, 6); }
    else put(b, &s[i], 1); // UTF-8 passes through; weftd decodes it as Node's client would send it
  }
  put(b, "\"", 1);
}

static char **fallback_argv;
static struct buf config;

/** Hands the call to the Node plugin, stdin replayed; outcome NULL: Node tries the socket itself. */
static void run_node(const char *outcome, const char *reason) {
  if (outcome) {
    char *v = NULL;
    if (asprintf(&v, "%s %s", outcome, reason) < 0 || setenv("WEFT_CNI_FASTPATH_OUTCOME", v, 1) != 0) { perror("weft.native"); exit(1); }
  }
  int fd = memfd_create("weft-cni-stdin", 0);
  if (fd < 0) { perror("weft.native: memfd_create"); exit(1); }
  for (size_t off = 0; off < config.len;) {
    ssize_t w = write(fd, config.p + off, config.len - off);
    if (w < 0) { if (errno == EINTR) continue; perror("weft.native: replaying stdin"); exit(1); }
    off += (size_t)w;
  }
  if (lseek(fd, 0, SEEK_SET) != 0 || dup2(fd, 0) != 0) { perror("weft.native: replaying stdin"); exit(1); }
  close(fd);
  execvp(fallback_argv[0], fallback_argv);
  fprintf(stderr, "weft.native: cannot run %s: %s\n", fallback_argv[0], strerror(errno));
  exit(1);
}

/** The fallback without having read stdin (VERSION, help): stdin is still the caller's. */
static void exec_node_untouched(void) {
  execvp(fallback_argv[0], fallback_argv);
  fprintf(stderr, "weft.native: cannot run %s: %s\n", fallback_argv[0], strerror(errno));
  exit(1);
}

// --- the config's top-level keys --------------------------------------------------------------

struct str { const char *p; size_t n; };
struct keys { int fast_path_false; struct str cni_socket, subnet_file; };

static const char *skip_ws(const char *s, const char *end) {
  while (s < end && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')) s++;
  return s;
}

/** s at an opening quote → past the closing one; *escaped says whether it held a backslash. */
static const char *skip_string(const char *s, const char *end, int *escaped) {
  *escaped = 0;
  for (s++; s < end; s++) {
    if (*s == '\\') { *escaped = 1; s++; }
    else if (*s == '"') return s + 1;
  }
  return NULL;
}

/** Past one value of any kind; nested strings may hold brackets, so they are skipped as strings. */
static const char *skip_value(const char *s, const char *end) {
  int depth = 0, esc;
  do {
    s = skip_ws(s, end);
    if (s >= end) return NULL;
    if (*s == '"') { if (!(s = skip_string(s, end, &esc))) return NULL; }
    else if (*s == '{' || *s == '[') { depth++; s++; }
    else if (*s == '}' || *s == ']') { if (--depth < 0) return NULL; s++; }
    else if (depth > 0 && (*s == ',' || *s == ':')) s++;
    else {
      const char *t = s;
      while (s < end && !strchr(" \t\r\n,:]}[{\"", *s)) s++;
      if (s == t) return NULL;
    }
  } while (depth > 0);
  return s;
}

static int key_is(const char *k, size_t n, const char *want) { return n == strlen(want) && memcmp(k, want, n) == 0; }

/** 0 when the keys could be read with certainty, -1 when Node must decide. Later keys win, as in JSON.parse. */
static int scan_keys(const char *s, const char *end, struct keys *out) {
  memset(out, 0, sizeof *out);
  s = skip_ws(s, end);
  if (s >= end || *s != '{') return -1;
  s = skip_ws(s + 1, end);
  if (s < end && *s == '}') return skip_ws(s + 1, end) == end ? 0 : -1;
  for (;;) {
    int esc;
    if (s >= end || *s != '"') return -1;
    const char *k = s + 1, *after = skip_string(s, end, &esc);
    if (!after || esc) return -1;
    size_t kn = (size_t)(after - 1 - k);
    s = skip_ws(after, end);
    if (s >= end || *s != ':') return -1;
    const char *v = skip_ws(s + 1, end), *vend = skip_value(v, end);
    if (!vend) return -1;
    int is_string = *v == '"';
    if (is_string && (key_is(k, kn, "cniSocket") || key_is(k, kn, "subnetFile"))) {
      skip_string(v, end, &esc);
      if (esc) return -1;
    }
    struct str val = is_string ? (struct str){v + 1, (size_t)(vend - v - 2)} : (struct str){NULL, 0};
    if (key_is(k, kn, "fastPath")) out->fast_path_false = (size_t)(vend - v) == 5 && memcmp(v, "false", 5) == 0;
    else if (key_is(k, kn, "cniSocket")) out->cni_socket = val;
    else if (key_is(k, kn, "subnetFile")) out->subnet_file = val;
    s = skip_ws(vend, end);
    if (s < end && *s == ',') { s = skip_ws(s + 1, end); continue; }
    if (s < end && *s == '}') return skip_ws(s + 1, end) == end ? 0 : -1;
    return -1;
  }
}

/**
 * The subnet file as a stream, or NULL: only a regular file of at most MAX_SUBNET_FILE bytes
 * (subnet-env.ts's rule). A subnetFile of /dev/zero was read line by line into an ever larger
 * buffer, and a FIFO without a writer blocked in open (hence O_NONBLOCK); Node reports such a
 * file properly (code 7) once this falls back to it.
 */
static FILE *open_subnet_file(const char *file) {
  int fd = open(file, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return NULL;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > MAX_SUBNET_FILE) {
    close(fd);
    return NULL;
  }
  FILE *f = fdopen(fd, "r");
  if (!f) close(fd);
  return f;
}

/** WEFT_CNI_SOCKET from the subnet file (parseSubnetEnvText's rules), else cni.sock beside it. */
static char *socket_from_subnet_file(const char *file) {
  char *found = NULL;
  FILE *f = open_subnet_file(file);
  if (f) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) >= 0) {
      char *a = line, *e = line + n;
      while (a < e && strchr(" \t\r\n\v\f", *a)) a++;
      while (e > a && strchr(" \t\r\n\v\f", e[-1])) e--;
      const char *key = "WEFT_CNI_SOCKET";
      size_t kl = strlen(key);
      if ((size_t)(e - a) <= kl || memcmp(a, key, kl) != 0) continue;
      char *p = a + kl;
      while (p < e && strchr(" \t", *p)) p++;
      if (p >= e || *p != '=') continue;
      for (p++; p < e && strchr(" \t\r\n\v\f", *p); p++) {}
      if (e - p >= 2 && (*p == '"' || *p == '\'') && e[-1] == *p) p++, e--;
      free(found);
      found = strndup(p, (size_t)(e - p)); // later lines win; an empty value means "not set"
    }
    free(line);
    fclose(f);
  }
  if (found && *found) return found;
  free(found);
  const char *slash = strrchr(file, '/');
  char *dflt = NULL;
  if (!slash) dflt = strdup("cni.sock");
  else if (asprintf(&dflt, "%.*s/cni.sock", (int)(slash - file), file) < 0) dflt = NULL;
  return dflt;
}

// --- the socket call ------------------------------------------------------------------------

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/** Waits for fd to be ready for ev until deadline; 0 ready, -1 with the reason in *why. */
static int wait_for(int fd, short ev, long long deadline, const char **why) {
  for (;;) {
    long long left = deadline - now_ms();
    if (left <= 0) { *why = "weftd did not answer within 120000 ms"; return -1; }
    struct pollfd p = {fd, ev, 0};
    int r = poll(&p, 1, (int)left);
    if (r > 0) return 0;
    if (r < 0 && errno != EINTR) { *why = strerror(errno); return -1; }
  }
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: weft.native NODE MAIN… (run by bin/cni/weft)\n"); return 2; }
  fallback_argv = argv + 1;
  const char *cmd = getenv("CNI_COMMAND");
  if (!cmd || !*cmd || strcmp(cmd, "VERSION") == 0) exec_node_untouched();

  for (;;) {
    char chunk[65536];
    ssize_t r = read(0, chunk, sizeof chunk);
    if (r == 0) break;
    if (r < 0) {
      if (errno == EINTR) continue;
      printf("{\"cniVersion\":\"1.1.0\",\"code\":5,\"msg\":\"cannot read the network config from stdin\",\"details\":\"%s\"}\n", strerror(errno));
      return 1;
    }
    put(&config, chunk, (size_t)r);
  }
  if (!config.p) put(&config, "", 0);

  struct keys keys;
  if (config.len > MAX_STDIN || scan_keys(config.p, config.p + config.len, &keys) != 0 || keys.fast_path_false) run_node(NULL, NULL);
  char *path;
  if (keys.cni_socket.n > 0) path = strndup(keys.cni_socket.p, keys.cni_socket.n);
  else if (keys.subnet_file.n > 0) {
    char *file = strndup(keys.subnet_file.p, keys.subnet_file.n);
    path = socket_from_subnet_file(file);
    free(file);
  } else path = socket_from_subnet_file(DEFAULT_SUBNET_FILE);
  if (!path) { perror("weft.native"); return 1; }

  // unavailable: nothing reached weftd yet
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  char why[512];
  if (strlen(path) >= sizeof addr.sun_path) {
    snprintf(why, sizeof why, "%s: ENAMETOOLONG", path);
    run_node("unavailable", why);
  }
  strcpy(addr.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  // For AF_UNIX a blocking connect waits (for a full backlog) at most SO_SNDTIMEO.
  struct timeval tv = {0, CONNECT_TIMEOUT_MS * 1000};
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    const char *e = errno == EAGAIN || errno == EINPROGRESS ? "no connection within 250 ms" : strerrorname_np(errno);
    snprintf(why, sizeof why, "%s: %s", path, e ? e : strerror(errno));
    run_node("unavailable", why);
  }

  // From here weftd may have acted on the request: every failure is "lost".
  struct buf req = {0};
  puts_(&req, "{\"env\":{");
  int first = 1;
  for (size_t i = 0; i < sizeof FORWARDED_ENV / sizeof *FORWARDED_ENV; i++) {
    const char *v = getenv(FORWARDED_ENV[i]);
    if (!v) continue;
    if (!first) puts_(&req, ",");
    first = 0;
    put_json_string(&req, FORWARDED_ENV[i], strlen(FORWARDED_ENV[i]));
    puts_(&req, ":");
    put_json_string(&req, v, strlen(v));
  }
  puts_(&req, "},\"stdin\":");
  put_json_string(&req, config.p, config.len);
  puts_(&req, ",\"reply\":\"raw\"}");

  long long deadline = now_ms() + REPLY_TIMEOUT_MS;
  const char *lost = NULL;
  for (size_t off = 0; off < req.len && !lost;) {
    ssize_t w = send(fd, req.p + off, req.len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w >= 0) off += (size_t)w;
    else if (errno == EAGAIN || errno == EINTR) { if (wait_for(fd, POLLOUT, deadline, &lost) != 0) break; }
    else lost = strerrorname_np(errno);
  }
  if (!lost && shutdown(fd, SHUT_WR) != 0) lost = strerrorname_np(errno);
  struct buf reply = {0};
  while (!lost) {
    char chunk[65536];
    ssize_t r = recv(fd, chunk, sizeof chunk, MSG_DONTWAIT);
    if (r > 0) put(&reply, chunk, (size_t)r);
    else if (r == 0) break;
    else if (errno == EAGAIN || errno == EINTR) wait_for(fd, POLLIN, deadline, &lost);
    else lost = strerrorname_np(errno);
  }
  close(fd);

  if (!lost) {
    // "<exitCode> <byteLength>\n" then exactly byteLength bytes
    char *nl = reply.p ? memchr(reply.p, '\n', reply.len) : NULL;
    int code;
    size_t n;
    char extra;
    if (nl && sscanf(reply.p, "%d %zu%c", &code, &n, &extra) == 3 && extra == '\n' && code >= 0 && code <= 255 && (size_t)(reply.p + reply.len - nl - 1) == n) {
      for (const char *p = nl + 1, *end = nl + 1 + n; p < end;) {
        ssize_t w = write(1, p, (size_t)(end - p));
        if (w < 0) { if (errno == EINTR) continue; return 1; }
        p += w;
      }
      return code;
    }
    lost = "weftd closed the connection without a complete answer";
  }
  snprintf(why, sizeof why, "%s: %s", path, lost);
  run_node("lost", why);
}
