// The connection loop: one goroutine per connection reads, parses and answers its
// requests in order.
//
// Reading. Bytes are read into a fixed 16 KiB buffer and fed to llhttp (strict mode).
// Callbacks copy the method, target and headers out, so the buffer only ever holds bytes
// not yet parsed. The parser pauses at the end of the headers when a body follows (the
// handler then streams it through read_body, which resumes the parser) and at the end of
// every message, so pipelined requests are taken one at a time and answered in order.
//
// Writing. Responses go into a per-connection buffer. It is flushed when the handler
// flushes, when a response is complete and no further pipelined request is already
// buffered (so a batch of 16 pipelined requests costs one read and one write), before
// any read from the socket (the buffered bytes may have been an incomplete request or a
// body the handler left unread), or when it grows past 64 KiB. A body up to 2 KiB written by a handler that does not flush gets
// a Content-Length; anything else is chunked (HTTP/1.1) or ends with the connection
// (HTTP/1.0), as net/http does.
//
// Deadlines. While waiting for a request: the idle timeout. Once its first byte is in:
// the read-header timeout (and the read timeout for the whole request), given to the
// socket only if another read is needed (most requests arrive in one). After the
// headers: the write timeout. The handler's deadline is a runtime timer per connection:
// when it fires it cancels the request's context and, if the handler has written
// nothing, a helper goroutine answers 503 at once and the handler's later writes fail.
// A client that hangs up (the poller's hang-up watch) cancels the context too. Neither
// timer is taken out of the heap when a request ends. A cleared socket deadline fires,
// if ever, as a stale no-op (sequence numbers), and the next request only re-dates it,
// which costs no heap operation. The handler's timer is not even re-dated: a firing
// before the running handler's deadline re-arms it for that (see deadline_timer).
//
// Idle connections. A keep-alive connection that has waited 50 ms for its next request
// is shed: its goroutine ends and its read buffer goes back to the pool, leaving the
// conn_loop, a one-shot readable watch on the socket and the idle timer. Whichever fires
// first claims the connection with a CAS (kShed -> kClaimed): readable starts a new
// goroutine that goes on where the old one stopped, idle closes it. Wakeups that land
// while the two are being armed are recorded (kFired*) and acted on by the arming
// goroutine itself, so none is lost. Shutdown claims shed connections the same way.
#include <llhttp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <charconv>
#include <cstring>
#include <ctime>
#include <exception>
#include <mutex>

#include "runtime/internal/sched.h"
#include "runtime/internal/timer.h"
#include "runtime/runtime.h"
#include "server/internal/buffer_pool.h"
#include "server/metrics.h"
#include "server/internal/server_impl.h"

namespace weft::http {

bool url_decode(std::string_view in, std::string& out, bool plus_is_space);

namespace detail {

// ---------------------------------------------------------------------------------------
// Connection phases (shutdown's view).

bool conn_state::begin_request() {
  weft::detail::spin_guard l(phase_mu);
  if (phase == conn_phase::closing) return false;
  if (phase != conn_phase::active) srv->stats.active_conns.add(1);
  phase = conn_phase::active;
  return true;
}

void conn_state::end_request() {
  weft::detail::spin_guard l(phase_mu);
  if (phase == conn_phase::active) {
    phase = conn_phase::idle;
    srv->stats.active_conns.add(-1);
  }
}

bool conn_state::close_if_idle() {
  {
    weft::detail::spin_guard l(phase_mu);
    if (phase != conn_phase::idle && phase != conn_phase::fresh) return false;
    phase = conn_phase::closing;
  }
  c.close();  // wakes the loop's read with errc::closed
  return true;
}

void conn_state::force() {
  force_close.store(true, std::memory_order_release);
  void (*cancel)(void*) = nullptr;
  void* arg = nullptr;
  {
    // The cancel runs under phase_mu: the request's end clears cancel_current under it
    // before its state goes away, so the state is alive while we hold it. (Cancelling a
    // context only readies goroutines; nothing under it takes phase_mu.)
    weft::detail::spin_guard l(phase_mu);
    if (phase == conn_phase::active) srv->stats.active_conns.add(-1);
    phase = conn_phase::closing;
    cancel = cancel_current;
    arg = cancel_arg;
    if (cancel) cancel(arg);
  }
  c.close();
}

// ---------------------------------------------------------------------------------------
// Date header, cached per second per thread: no lock, and no line shared between Ms.
// (A goroutine may move to another thread between two requests, never inside this.)

namespace {

struct date_cache {
  time_t sec = -1;
  std::size_t len = 0;
  char text[40] = {};
};
thread_local date_cache t_date;

std::string_view date_text() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  date_cache& d = t_date;
  if (ts.tv_sec != d.sec) {
    tm t;
    gmtime_r(&ts.tv_sec, &t);
    d.len = strftime(d.text, sizeof d.text, "%a, %d %b %Y %H:%M:%S GMT", &t);
    d.sec = ts.tv_sec;
  }
  return {d.text, d.len};
}

// Builds a response head on the stack and appends it to the write buffer in one copy:
// a fixed piece is a few moves, not a strlen and a memcpy call (the head of a small
// response cost about 1,500 instructions as a dozen std::string appends).
class head_builder {
 public:
  explicit head_builder(std::string& out) : out_(out) {}
  head_builder(const head_builder&) = delete;
  template <std::size_t N>
  [[gnu::always_inline]] void lit(const char (&s)[N]) {
    put(s, N - 1);
  }
  void put(std::string_view s) { put(s.data(), s.size()); }
  [[gnu::always_inline]] void put(const char* p, std::size_t n) {
    if (n > kCap - len_) [[unlikely]] {
      put_slow(p, n);
      return;
    }
    std::memcpy(buf_ + len_, p, n);  // a constant n (lit) compiles to moves
    len_ += n;
  }
  void status(int code) {  // 100..999
    char d[3] = {static_cast<char>('0' + code / 100), static_cast<char>('0' + code / 10 % 10),
                 static_cast<char>('0' + code % 10)};
    put(d, 3);
  }
  void uint(uint64_t v) {
    char d[24];
    auto r = std::to_chars(d, d + sizeof d, v);
    put(d, static_cast<std::size_t>(r.ptr - d));
  }
  // "Date: ...\r\nServer: ...\r\n"
  void date_and_server(std::string_view server) {
    lit("Date: ");
    put(date_text());
    lit("\r\nServer: ");
    put(server);
    lit("\r\n");
  }
  // Appends what is buffered to the output (the head's end; put_slow on overflow).
  void done() {
    out_.append(buf_, len_);
    len_ = 0;
  }

 private:
  [[gnu::noinline]] void put_slow(const char* p, std::size_t n) {
    done();
    if (n > kCap)
      out_.append(p, n);
    else
      put(p, n);
  }
  static constexpr std::size_t kCap = 512;
  std::string& out_;
  std::size_t len_ = 0;
  char buf_[kCap];
};

void append_hex(std::string& out, uint64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v, 16);
  out.append(buf, r.ptr);
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Per-request state, on the connection goroutine's stack while the request is served.

struct request_state {
  struct conn_loop* loop;
  request* req;
  response_writer* w;
  clock::time_point start;
  static constexpr int64_t kNoDeadline = INT64_MAX / 2;
  int64_t deadline_ns = 0;           // nanotime; kNoDeadline without a handler timeout
  bool head = false;                 // HEAD: headers only
  bool expect_continue = false;
  bool sent_continue = false;
  bool close_after = false;          // Connection: close on this response
  bool chunked = false;              // response uses chunked encoding
  bool headers_out = false;          // status line and headers are in the write buffer
  std::string body;                  // body held back to compute Content-Length
  uint64_t body_read = 0;
  bool write_error = false;

  // Who owns the response: the handler writes (kHandler) or the deadline answered 503
  // (kTimedOut). Decided once, by CAS.
  static constexpr int kUnclaimed = 0, kHandler = 1, kTimedOut = 2;
  std::atomic<int> owner{kUnclaimed};

  // The context, made on demand; cancellation may come first (deadline, hang-up). It
  // has no timer of its own: the connection's deadline timer expires it (on_deadline),
  // so a request that uses its context arms one timer, not two.
  weft::detail::spinlock ctx_mu;
  bool ctx_made = false;
  context ctx;                       // what ctx() hands out (shorten_deadline may derive)
  context root;                      // the request's own: expiring it ends every derived one
  cancel_func cancel;
  bool canceled = false;
  bool expired = false;              // the deadline passed before the context was made
  std::error_code cancel_cause;

  bool past_deadline() const { return deadline_ns < kNoDeadline && weft::detail::nanotime() >= deadline_ns; }

  const context& get_ctx() {
    weft::detail::spin_guard l(ctx_mu);
    if (!ctx_made) {
      auto c = weft::detail::with_deadline_untimed(background(),
                                                   clock::time_point(std::chrono::nanoseconds(deadline_ns)));
      ctx = root = std::move(c.ctx);
      cancel = std::move(c.cancel);
      ctx_made = true;
      if (expired)
        weft::detail::expire(root);
      else if (canceled)
        cancel(cancel_cause);
    }
    return ctx;
  }
  // The deadline passed (on_deadline): the context ends with deadline_exceeded.
  void expire_ctx() {
    context c;
    {
      weft::detail::spin_guard l(ctx_mu);
      if (canceled) return;
      canceled = expired = true;
      if (ctx_made) c = root;
    }
    if (c.node()) weft::detail::expire(c);
  }
  // The client went away (or shutdown forces it), or the request is over: cancel.
  void cancel_ctx(std::error_code cause) {
    cancel_func f;
    {
      weft::detail::spin_guard l(ctx_mu);
      if (canceled) return;
      canceled = true;
      cancel_cause = cause;
      if (ctx_made) f = cancel;
    }
    if (f) f(cause);
  }
};

// How long a keep-alive connection keeps its goroutine while waiting for its next request.
constexpr std::chrono::nanoseconds kShedAfter = std::chrono::milliseconds(50);

struct conn_loop {
  conn_state* cs;
  server::impl* srv;
  std::shared_ptr<const server_options> opts;
  net::conn c;
  std::string remote;

  static constexpr std::size_t kReadBuf = buffer_pool::kBufBytes;
  pooled_buffer rbuf_mem;  // released while the connection sits idle
  // The header lists of the last request and response, their fields all spares now
  // (http::headers): the next ones fill them without allocating. Released with the
  // buffers when the connection is shed.
  std::vector<header_field> spare_req_fields, spare_resp_fields;
  // The last response's held-back body (request_state::body), emptied: the next small
  // body (json's 27 bytes are past std::string's inline 15) reuses its storage.
  std::string spare_body;
  static constexpr std::size_t kSpareFields = 32, kSpareFieldBytes = 256;
  static void keep_fields(std::vector<header_field>& spare, headers& used) {
    std::vector<header_field>& f = used.f_;
    used.n_ = 0;
    if (f.capacity() > kSpareFields) return;  // not a huge list from a rare request
    // Nor a huge cookie: a spare keeps at most kSpareFieldBytes of storage.
    for (header_field& x : f) {
      if (x.name.capacity() > kSpareFieldBytes) std::string().swap(x.name);
      if (x.value.capacity() > kSpareFieldBytes) std::string().swap(x.value);
    }
    spare = std::move(f);
  }
  char* rbuf = nullptr;
  std::size_t rpos = 0, rlen = 0;
  std::string wbuf;

  // Shedding: an idle connection gives up its goroutine (and buffers). Whichever of the
  // readable watch and the idle timer claims it (kShed -> kClaimed) starts the next one.
  // While they are being armed (kArming) a wakeup is only recorded (kFired*).
  static constexpr int kRunning = 0, kArming = 1, kFiredReadable = 2, kFiredIdle = 3, kShed = 4,
                       kClaimed = 5;
  std::atomic<int> shed_state{kRunning};
  weft::detail::timer idle_timer;
  bool idle_expired = false;         // the idle timer claimed it: close
  bool started = false;              // llhttp and timers initialized

  llhttp_t parser;
  // Current message, filled by the callbacks.
  request* req = nullptr;
  std::string hname, hval;
  bool in_value = false;
  std::size_t header_bytes = 0;
  bool headers_done = false;
  bool message_done = false;
  bool body_too_large = false;
  bool header_too_large = false;
  std::string body_pending;
  std::size_t body_off = 0;
  uint64_t body_total = 0;
  uint64_t body_limit = 0;           // this request's body limit

  request_state* st = nullptr;       // while a handler runs
  // The handler deadline's timer, armed lazily: it stays armed after a request ends, and
  // a request whose deadline is no earlier than the timer's leaves it alone (with one
  // handler timeout for every request, that is all of them after the first). A firing
  // compares the clock with the latest handler's deadline: before it, the timer is
  // re-armed for it; past it, that request times out if it is still the running one
  // (checked under cs->phase_mu, which orders a firing against the end of the request),
  // and otherwise the timer stays disarmed until the next request. So a request costs
  // no timer operation. The timer's state is under deadline_mu, a futex lock, as it is
  // held across timer calls (phase_mu is a spin lock).
  weft::detail::timer deadline_timer;
  uint64_t deadline_seq = 0;         // the latest request's number
  uint64_t active_deadline_seq = 0;  // cs->phase_mu: the running handler's, 0 if none
  weft::detail::lock deadline_mu;
  uint64_t deadline_owner = 0;       // deadline_mu: the latest handler's number, 0 if none
  int64_t active_deadline_ns = 0;    // deadline_mu: its deadline
  int64_t deadline_armed_ns = 0;     // deadline_mu: deadline_timer's `when`, 0: not armed
  bool deadline_timer_dead = false;  // deadline_mu: the connection is closing: never re-arm
  // Makes the timer fire no later than d (deadline_mu held).
  void arm_deadline_locked(int64_t d) {
    if (deadline_timer_dead || (deadline_armed_ns != 0 && deadline_armed_ns <= d)) return;
    deadline_armed_ns = d;
    weft::detail::timer_reset(&deadline_timer, d);
  }
  wait_group helpers;                // on_deadline in progress, and the 503 writer it spawns
  weft::mutex write_mu;              // the handler and the 503 writer share the socket

  std::error_code flush_locked();
  std::error_code flush() {
    std::lock_guard<weft::mutex> l(write_mu);
    return flush_locked();
  }
  enum class run_result { done, shed };
  run_result run();                  // the request loop, on whichever goroutine holds the conn
  void finish(bool clean);           // closes and unregisters; deletes the loop
  enum class shed_result { handed_off, not_shed, readable, idle_expired };
  shed_result shed(std::chrono::nanoseconds idle_left);
  bool read_more();                  // false: EOF, error or timeout
  // The read-header deadline is decided when a request's first bytes are in, but given
  // to the socket only before a further read: a request whose headers came whole in one
  // read (nearly all of them) never blocks on it, and is spared a deadline update. Until
  // then the idle deadline stays set, unused: nothing reads meanwhile.
  clock::time_point pending_rd{};    // {}: clear
  bool rd_pending = false;
  void defer_read_deadline(clock::time_point t) {
    pending_rd = t;
    rd_pending = true;
  }
  void set_read_deadline_now(clock::time_point t) {
    rd_pending = false;
    c.set_read_deadline(t);
  }
  void start_header_deadline();
  std::error_code last_read_err;
  int parse_head();                  // see below
  void simple_response(int status, std::string_view body, bool close);
  bool handle_request();             // true: keep the connection open
  void lingering_close();
  void finish_response(request_state& rs, response_writer& w);
  void drain_body();
  void log_access(const request& r, const response_writer& w, clock::duration took);

  // For the llhttp callbacks (request's fields are ours to fill).
  void append_method(const char* at, std::size_t n) { req->method_.append(at, n); }
  void append_target(const char* at, std::size_t n) { req->target_.append(at, n); }
  void push_header() {
    if (!hname.empty()) req->headers_.add(hname, hval);
    hname.clear();
    hval.clear();
  }
  void set_version(int major, int minor) {
    req->major_ = major;
    req->minor_ = minor;
  }
  void set_content_length(uint64_t n) { req->content_length_ = n; }
};

// ---------------------------------------------------------------------------------------
// llhttp callbacks.

namespace {

conn_loop* loop_of(llhttp_t* p) { return static_cast<conn_loop*>(p->data); }

int on_message_begin(llhttp_t* p) {
  conn_loop* l = loop_of(p);
  l->hname.clear();
  l->hval.clear();
  l->in_value = false;
  l->header_bytes = 0;
  l->headers_done = false;
  l->message_done = false;
  l->body_too_large = false;
  l->header_too_large = false;
  l->body_pending.clear();
  l->body_off = 0;
  l->body_total = 0;
  l->body_limit = l->opts->max_body_bytes;
  return 0;
}

int count_header(llhttp_t* p, std::size_t n) {
  conn_loop* l = loop_of(p);
  l->header_bytes += n;
  if (l->header_bytes > l->opts->max_header_bytes) {
    l->header_too_large = true;
    llhttp_set_error_reason(p, "header too large");
    return HPE_USER;
  }
  return 0;
}

int on_method(llhttp_t* p, const char* at, std::size_t n) {
  loop_of(p)->append_method(at, n);
  return count_header(p, n);
}

int on_url(llhttp_t* p, const char* at, std::size_t n) {
  loop_of(p)->append_target(at, n);
  return count_header(p, n);
}

void push_header(conn_loop* l) { l->push_header(); }

int on_header_field(llhttp_t* p, const char* at, std::size_t n) {
  conn_loop* l = loop_of(p);
  if (l->in_value) {
    push_header(l);
    l->in_value = false;
  }
  l->hname.append(at, n);
  return count_header(p, n + 4);  // ": " and CRLF
}

int on_header_value(llhttp_t* p, const char* at, std::size_t n) {
  conn_loop* l = loop_of(p);
  l->in_value = true;
  l->hval.append(at, n);
  return count_header(p, n);
}

int on_headers_complete(llhttp_t* p) {
  conn_loop* l = loop_of(p);
  if (l->in_value || !l->hname.empty()) push_header(l);
  l->in_value = false;
  l->headers_done = true;
  l->set_version(p->http_major, p->http_minor);
  if (p->flags & F_CONTENT_LENGTH) l->set_content_length(p->content_length);
  bool has_body = (p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0);
  // Pause so that the handler can stream the body; without one, the message completes
  // right away and pauses there.
  return has_body ? HPE_PAUSED : 0;
}

int on_body(llhttp_t* p, const char* at, std::size_t n) {
  conn_loop* l = loop_of(p);
  l->body_total += n;
  if (l->body_total > l->body_limit) {
    l->body_too_large = true;
    llhttp_set_error_reason(p, "body too large");
    return HPE_USER;
  }
  l->body_pending.append(at, n);
  return 0;
}

int on_message_complete(llhttp_t* p) {
  loop_of(p)->message_done = true;
  return HPE_PAUSED;  // one message at a time
}

llhttp_settings_t make_settings() {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_message_begin = on_message_begin;
  s.on_method = on_method;
  s.on_url = on_url;
  s.on_header_field = on_header_field;
  s.on_header_value = on_header_value;
  s.on_headers_complete = on_headers_complete;
  s.on_body = on_body;
  s.on_message_complete = on_message_complete;
  return s;
}

const llhttp_settings_t g_settings = make_settings();

int64_t now_ns() { return weft::detail::nanotime(); }

clock::time_point after(std::chrono::nanoseconds d) { return clock::now() + d; }

}  // namespace

void conn_loop::start_header_deadline() {
  auto hdr = opts->read_header_timeout;
  if (opts->read_timeout.count() && (hdr.count() == 0 || opts->read_timeout < hdr)) hdr = opts->read_timeout;
  defer_read_deadline(hdr.count() ? after(hdr) : clock::time_point{});
}

// ---------------------------------------------------------------------------------------
// Reading.

bool conn_loop::read_more() {
  if (rd_pending) set_read_deadline_now(pending_rd);
  // Whatever is held back goes out before we wait: an answer kept for a pipelined
  // request that turned out to be incomplete, or for a body the handler left unread,
  // which the client may be waiting for before it sends more.
  if (!wbuf.empty()) {
    if (auto err = flush()) {
      last_read_err = err;
      return false;
    }
  }
  if (!rbuf) {
    rbuf_mem.acquire();
    rbuf = rbuf_mem.get();
  }
  if (rpos == rlen) rpos = rlen = 0;
  if (rlen == kReadBuf) {
    if (rpos == 0) return false;  // cannot happen: callbacks consume everything parsed
    std::memmove(rbuf, rbuf + rpos, rlen - rpos);
    rlen -= rpos;
    rpos = 0;
  }
  auto r = c.read(rbuf + rlen, kReadBuf - rlen);
  rlen += r.n;
  last_read_err = r.err;
  return r.n > 0;
}

// Parses until the headers of the next request are complete. Returns 1 when they are,
// 0 when the connection ended cleanly between requests, 2 when it was shed (given up
// to the readable watch while idle), or a negative llhttp error (-HPE_*), or -1000 for
// a timeout or read error in the middle of a request.
int conn_loop::parse_head() {
  bool started = false;
  for (;;) {
    if (rpos == rlen) {
      if (!started) {
        // Between requests: the idle timeout applies until the first byte arrives. The
        // first kShedAfter of it are spent waiting here (keep-alive requests usually come
        // back quickly); after that the connection is shed and waits with no goroutine.
        auto idle = opts->idle_timeout.count() ? opts->idle_timeout : opts->read_header_timeout;
        bool may_shed = idle > kShedAfter;
        auto first = may_shed ? kShedAfter : idle;
        // No idle timeout: clear whatever an earlier request left on the socket.
        set_read_deadline_now(first.count() ? after(first) : clock::time_point{});
        if (!read_more()) {
          if (!may_shed || last_read_err != net::errc::timeout) return 0;
          switch (shed(idle - kShedAfter)) {
            case shed_result::handed_off: return 2;
            case shed_result::readable: continue;  // data (or EOF) came while shedding
            case shed_result::not_shed:
            case shed_result::idle_expired: return 0;
          }
        }
        if (!cs->begin_request()) return 0;
        started = true;
        start_header_deadline();
      } else if (!read_more()) {
        return -1000;
      }
    }
    if (!started) {  // a pipelined request, already (partly) buffered
      if (!cs->begin_request()) return 0;
      started = true;
      start_header_deadline();
    }
    const char* begin = rbuf + rpos;
    llhttp_errno_t e = llhttp_execute(&parser, begin, rlen - rpos);
    if (e == HPE_OK) {
      rpos = rlen;  // all parsed, headers not complete yet
      continue;
    }
    if (e == HPE_PAUSED) {
      rpos += static_cast<std::size_t>(llhttp_get_error_pos(&parser) - begin);
      llhttp_resume(&parser);
      if (headers_done) return 1;
      continue;
    }
    return -static_cast<int>(e);
  }
}

// ---------------------------------------------------------------------------------------
// Writing.

std::error_code conn_loop::flush_locked() {
  if (wbuf.empty()) return {};
  auto r = c.write(wbuf.data(), wbuf.size());
  wbuf.clear();
  if (wbuf.capacity() > 256 * 1024) wbuf.shrink_to_fit();
  return r.err;
}

void conn_loop::simple_response(int status, std::string_view body, bool close) {
  std::lock_guard<weft::mutex> l(write_mu);
  head_builder h(wbuf);
  h.lit("HTTP/1.1 ");
  h.status(status);
  h.lit(" ");
  h.put(status_text(status));
  h.lit("\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ");
  h.uint(body.size());
  h.lit("\r\n");
  h.date_and_server(opts->server_name);
  if (close) h.lit("Connection: close\r\n");
  h.lit("\r\n");
  h.done();
  wbuf.append(body);
  flush_locked();
}

void answer_timeout(conn_loop* l);

}  // namespace detail

// ---------------------------------------------------------------------------------------
// request / response_writer, backed by request_state.

using detail::request_state;

const context& request::ctx() {
  static const context bg;
  return st_ ? st_->get_ctx() : bg;
}

std::string_view request::remote_address() const { return st_ ? std::string_view(st_->loop->remote) : std::string_view(); }

void request::shorten_deadline(clock::time_point t) {
  if (!st_) return;
  int64_t d = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  if (d <= 0 || d >= st_->deadline_ns) return;
  st_->deadline_ns = d;
  {
    detail::conn_loop* l = st_->loop;
    weft::detail::lock_guard g(l->deadline_mu);
    l->active_deadline_ns = d;
    l->arm_deadline_locked(d);
  }
  weft::detail::spin_guard l(st_->ctx_mu);
  if (st_->ctx_made) {
    // Already handed out: derive an earlier child (the old one stays valid). `cancel`
    // stays the root's: cancelling it at the end of the request ends the child too.
    st_->ctx = weft::detail::with_deadline_untimed(st_->ctx, t).ctx;  // on_deadline expires root
  }
}

bool request::extend_deadline(clock::time_point t) {
  if (!st_) return false;
  int64_t d = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  // The response is written after t: its write deadline moves whatever the handler
  // deadline (which may already be later, or none).
  auto wt = st_->loop->opts->write_timeout;
  if (wt.count()) st_->loop->c.set_write_deadline(t + wt);
  if (d <= st_->deadline_ns) return true;
  {
    weft::detail::spin_guard l(st_->ctx_mu);
    if (st_->ctx_made) return false;  // a context's deadline cannot move later
    st_->deadline_ns = d;
  }
  detail::conn_loop* l = st_->loop;
  weft::detail::lock_guard g(l->deadline_mu);
  l->active_deadline_ns = d;  // an earlier firing re-arms the timer for it
  return true;
}

void request::set_body_limit(uint64_t n) {
  if (st_ && n < st_->loop->body_limit) st_->loop->body_limit = n;
}

net::io_result request::read_body(void* buf, std::size_t n) {
  if (!st_) return {0, net::errc::eof};
  detail::conn_loop* l = st_->loop;
  if (l->body_too_large) return {0, errc::body_too_large};
  if (st_->expect_continue && !st_->sent_continue && !st_->w->wrote_header()) {
    st_->sent_continue = true;
    std::lock_guard<weft::mutex> g(l->write_mu);
    l->wbuf.append("HTTP/1.1 100 Continue\r\n\r\n");
    l->flush_locked();
  }
  for (;;) {
    if (l->body_off < l->body_pending.size()) {
      std::size_t k = std::min(n, l->body_pending.size() - l->body_off);
      std::memcpy(buf, l->body_pending.data() + l->body_off, k);
      l->body_off += k;
      if (l->body_off == l->body_pending.size()) {
        l->body_pending.clear();
        l->body_off = 0;
      }
      st_->body_read += k;
      return {k, {}};
    }
    if (l->message_done) return {0, net::errc::eof};
    if (l->rpos == l->rlen && !l->read_more()) return {0, net::errc::unexpected_eof};
    const char* begin = l->rbuf + l->rpos;
    llhttp_errno_t e = llhttp_execute(&l->parser, begin, l->rlen - l->rpos);
    if (e == HPE_OK) {
      l->rpos = l->rlen;
    } else if (e == HPE_PAUSED) {
      l->rpos += static_cast<std::size_t>(llhttp_get_error_pos(&l->parser) - begin);
      llhttp_resume(&l->parser);
    } else {
      st_->close_after = true;
      if (l->body_too_large) return {0, errc::body_too_large};
      return {0, std::make_error_code(std::errc::bad_message)};
    }
  }
}

std::pair<std::string, std::error_code> request::read_all_body() {
  std::string out;
  char buf[16384];
  for (;;) {
    auto r = read_body(buf, sizeof buf);
    out.append(buf, r.n);
    if (r.err) {
      if (r.err == net::errc::eof) return {std::move(out), {}};
      return {std::move(out), r.err};
    }
  }
}

namespace {

bool body_allowed(int status) { return !(status < 200 || status == 204 || status == 304); }

// Appends the status line and headers to the write buffer (write_mu held).
void emit_headers(request_state& rs, response_writer& w, bool final_known_length) {
  detail::conn_loop* l = rs.loop;
  detail::head_builder out(l->wbuf);
  bool http10 = rs.req->proto_minor() == 0 && rs.req->proto_major() == 1;
  out.put(http10 ? std::string_view("HTTP/1.0 ") : std::string_view("HTTP/1.1 "));
  out.status(w.status());
  out.lit(" ");
  out.put(status_text(w.status()));
  out.lit("\r\n");
  bool has_cl = false, has_ct = false;
  for (const auto& f : w.header().fields()) {
    if (iequals(f.name, "Content-Length")) {
      has_cl = true;
    } else if (iequals(f.name, "Content-Type")) {
      has_ct = true;
    } else if (iequals(f.name, "Connection") || iequals(f.name, "Transfer-Encoding")) {
      continue;  // ours to decide
    }
    out.put(f.name);
    out.lit(": ");
    out.put(f.value);
    out.lit("\r\n");
  }
  bool allowed = body_allowed(w.status());
  if (allowed && !has_cl) {
    if (final_known_length) {
      out.lit("Content-Length: ");
      out.uint(rs.body.size());
      out.lit("\r\n");
    } else if (!http10) {
      rs.chunked = true;
      out.lit("Transfer-Encoding: chunked\r\n");
    } else {
      rs.close_after = true;  // HTTP/1.0 without a length: the body ends with the connection
    }
  }
  if (allowed && !has_ct && (!rs.body.empty() || !final_known_length))
    out.lit("Content-Type: text/plain; charset=utf-8\r\n");
  out.date_and_server(l->opts->server_name);
  // A shutdown that began while the handler ran ends keep-alive here (Go does the same).
  if (l->srv->shutting_down.load(std::memory_order_acquire)) rs.close_after = true;
  if (rs.close_after)
    out.lit("Connection: close\r\n");
  else if (http10)
    out.lit("Connection: keep-alive\r\n");
  out.lit("\r\n");
  out.done();
  rs.headers_out = true;
}

// Moves held-back body bytes to the write buffer (write_mu held, headers out).
void emit_body(request_state& rs, std::string_view data) {
  if (rs.head || data.empty() || !body_allowed(rs.w->status())) return;
  std::string& out = rs.loop->wbuf;
  if (rs.chunked) {
    detail::append_hex(out, data.size());
    out.append("\r\n");
    out.append(data);
    out.append("\r\n");
  } else {
    out.append(data);
  }
}

constexpr std::size_t kBufferBeforeChunking = 2048;
constexpr std::size_t kFlushAt = 64 * 1024;

// The response now belongs to the handler, unless the deadline already answered 503.
bool claim(request_state& rs) {
  int o = rs.owner.load(std::memory_order_acquire);
  if (o == request_state::kHandler) return true;
  if (o == request_state::kTimedOut) return false;
  // Past the deadline the response is the 503's, even if the deadline timer has not
  // run yet (a handler may see its context born expired, or overrun without looking):
  // the first write settles it here instead of racing that timer.
  if (rs.past_deadline()) {
    detail::answer_timeout(rs.loop);
    return false;
  }
  int expected = request_state::kUnclaimed;
  return rs.owner.compare_exchange_strong(expected, request_state::kHandler, std::memory_order_acq_rel) ||
         expected == request_state::kHandler;
}

}  // namespace

void response_writer::write_header(int status) {
  if (wrote_header_) return;
  if (!st_ || !claim(*st_)) return;
  wrote_header_ = true;
  status_ = status < 100 || status > 999 ? 500 : status;
}

std::error_code response_writer::write(std::string_view data) {
  if (!st_) return net::errc::closed;
  if (!claim(*st_)) return errc::handler_timeout;
  if (!wrote_header_) write_header(200);
  request_state& rs = *st_;
  if (rs.write_error) return net::errc::closed;
  body_bytes_ += data.size();
  if (!rs.headers_out) {
    if (rs.body.size() + data.size() <= kBufferBeforeChunking && !headers_.has("Content-Length")) {
      rs.body.append(data);  // still small: held back to send a Content-Length
      return {};
    }
    std::lock_guard<weft::mutex> l(rs.loop->write_mu);
    emit_headers(rs, *this, false);
    std::string held = std::move(rs.body);
    rs.body.clear();
    emit_body(rs, held);
  } else if (rs.loop->wbuf.size() < kFlushAt) {
    std::lock_guard<weft::mutex> l(rs.loop->write_mu);
    emit_body(rs, data);
    return {};
  }
  std::lock_guard<weft::mutex> l(rs.loop->write_mu);
  if (rs.headers_out && !data.empty()) emit_body(rs, data);
  if (rs.loop->wbuf.size() >= kFlushAt) {
    if (auto err = rs.loop->flush_locked()) {
      rs.write_error = true;
      return err;
    }
  }
  return {};
}

std::error_code response_writer::flush() {
  if (!st_) return net::errc::closed;
  if (!claim(*st_)) return errc::handler_timeout;
  if (!wrote_header_) write_header(200);
  request_state& rs = *st_;
  std::lock_guard<weft::mutex> l(rs.loop->write_mu);
  if (!rs.headers_out) {
    emit_headers(rs, *this, false);
    std::string held = std::move(rs.body);
    rs.body.clear();
    emit_body(rs, held);
  }
  if (auto err = rs.loop->flush_locked()) {
    rs.write_error = true;
    return err;
  }
  return {};
}

namespace detail {

// ---------------------------------------------------------------------------------------
// The handler's deadline and the client's hang-up.

// The deadline passed with nothing written: the response becomes a 503 (from the
// deadline timer, or from the handler's first write if its context woke it first).
namespace {

// Takes the response for the 503, if nothing was written: then the caller sends it with
// send_timeout_response(). The helpers count taken here makes the request's end wait
// for that response.
bool claim_for_timeout(conn_loop* l) {
  request_state* rs = l->st;
  if (!rs) return false;
  int expected = request_state::kUnclaimed;
  if (!rs->owner.compare_exchange_strong(expected, request_state::kTimedOut, std::memory_order_acq_rel)) return false;
  l->helpers.add(1);
  return true;
}

// From a goroutine: the write may block. The loop waits for it (helpers) before it
// tears the request down.
void send_timeout_response(conn_loop* l) {
  weft::go([l] {
    l->simple_response(503, "Service Unavailable\n", true);
    l->helpers.done();
  });
}

}  // namespace

void answer_timeout(conn_loop* l) {
  if (claim_for_timeout(l)) send_timeout_response(l);
}

namespace {

// The handler's deadline passed: the 503 (if nothing was written), then the context, so
// that a handler woken by its context finds the response already taken.
void on_deadline(weft::detail::timer*, void* arg, uintptr_t) {
  auto* l = static_cast<conn_loop*>(arg);
  uint64_t owner;
  {
    weft::detail::lock_guard g(l->deadline_mu);
    l->deadline_armed_ns = 0;
    owner = l->deadline_owner;
    if (owner == 0) return;  // no handler yet
    if (weft::detail::nanotime() < l->active_deadline_ns) {
      l->arm_deadline_locked(l->active_deadline_ns);  // armed for an earlier request
      return;
    }
  }
  {
    weft::detail::spin_guard g(l->cs->phase_mu);
    if (l->active_deadline_seq != owner) return;  // that request has ended meanwhile
    l->helpers.add(1);  // the request's end (which clears the seq first) waits for us
  }
  bool answer = claim_for_timeout(l);
  l->st->expire_ctx();
  if (answer) send_timeout_response(l);
  l->helpers.done();
}

// Hang-up watch: the peer went away (or half-closed with nothing more to read).
void on_hangup(void* arg) {
  auto* l = static_cast<conn_loop*>(arg);
  request_state* rs = l->st;
  if (!rs) return;
  char b;
  ssize_t k = ::recv(l->c.native_handle(), &b, 1, MSG_PEEK | MSG_DONTWAIT);
  if (k > 0) return;  // more requests are queued behind this one: not gone
  rs->cancel_ctx(context_errc::canceled);
}

void force_cancel(void* arg) {
  auto* l = static_cast<conn_loop*>(arg);
  if (request_state* rs = l->st) rs->cancel_ctx(context_errc::canceled);
}

}  // namespace

void conn_loop::finish_response(request_state& rs, response_writer& w) {
  std::lock_guard<weft::mutex> l(write_mu);
  if (rs.owner.load(std::memory_order_acquire) == request_state::kTimedOut) return;  // 503 sent
  if (!w.wrote_header()) {
    w.wrote_header_ = true;
    w.status_ = 200;
  }
  if (!rs.headers_out) {
    emit_headers(rs, w, true);
    emit_body(rs, rs.body);
    rs.body.clear();
  } else if (rs.chunked && !rs.head) {
    wbuf.append("0\r\n\r\n");
  }
  // Flush unless the next pipelined request is already here: answer it in the same write.
  if (rs.close_after || rpos == rlen || wbuf.size() >= kFlushAt) {
    if (flush_locked()) rs.close_after = true;
  }
}

void conn_loop::drain_body() {
  // Read what is left of a body the handler did not consume, up to 256 KiB (Go's
  // limit), so the connection can be reused; beyond that, close it.
  uint64_t drained = 0;
  char buf[4096];
  while (!message_done && drained < 256 * 1024) {
    if (body_off < body_pending.size()) {
      drained += body_pending.size() - body_off;
      body_pending.clear();
      body_off = 0;
      continue;
    }
    if (rpos == rlen && !read_more()) return;
    const char* begin = rbuf + rpos;
    llhttp_errno_t e = llhttp_execute(&parser, begin, rlen - rpos);
    if (e == HPE_OK) {
      rpos = rlen;
    } else if (e == HPE_PAUSED) {
      rpos += static_cast<std::size_t>(llhttp_get_error_pos(&parser) - begin);
      llhttp_resume(&parser);
    } else {
      return;
    }
    (void)buf;
  }
}

void conn_loop::log_access(const request& r, const response_writer& w, clock::duration took) {
  if (!opts->access_log) return;
  double ms = std::chrono::duration<double, std::milli>(took).count();
  int status = w.status() ? w.status() : 200;
  if (opts->access_log_json) {
    std::string path(r.path());
    // Minimal JSON escaping of the path (the only free-form field besides the method).
    std::string esc;
    for (char ch : path) {
      if (ch == '"' || ch == '\\') esc.push_back('\\');
      if (static_cast<unsigned char>(ch) < 0x20) continue;
      esc.push_back(ch);
    }
    opts->access_log->info(R"({{"method":"{}","path":"{}","status":{},"bytes":{},"duration_ms":{:.3f},"remote":"{}"}})",
                           r.method(), esc, status, w.bytes_written(), ms, remote);
  } else {
    opts->access_log->info("{} {} {} {} {:.3f}ms {}", r.method(), r.path(), status, w.bytes_written(), ms, remote);
  }
}

bool conn_loop::handle_request() {
  request& r = *req;
  response_writer w;
  w.headers_.f_ = std::move(spare_resp_fields);
  struct keep_resp_fields {
    conn_loop* l;
    response_writer& w;
    ~keep_resp_fields() { keep_fields(l->spare_resp_fields, w.headers_); }
  } keep_resp{this, w};
  request_state rs;
  rs.body.swap(spare_body);
  struct keep_body {
    std::string& spare;
    std::string& body;
    ~keep_body() {
      if (body.capacity() > 2 * kBufferBeforeChunking) return;  // a rare big one goes
      body.clear();
      spare.swap(body);
    }
  } keep_b{spare_body, rs.body};
  rs.loop = this;
  rs.req = &r;
  rs.w = &w;
  rs.start = clock::now();
  r.st_ = &rs;
  w.st_ = &rs;

  // Where the target points: origin-form "/p?q", absolute-form "http://h/p?q", "*".
  std::string_view target = r.target_;
  std::string_view host_from_url;
  if (target.rfind("http://", 0) == 0 || target.rfind("https://", 0) == 0) {
    std::string_view rest = target.substr(target.find("://") + 3);
    auto slash = rest.find('/');
    host_from_url = rest.substr(0, slash);
    target = slash == std::string_view::npos ? std::string_view("/") : rest.substr(slash);
  }
  auto qm = target.find('?');
  if (qm != std::string_view::npos) r.query_ = std::string(target.substr(qm + 1));
  std::string_view raw_path = target.substr(0, qm);
  if (!url_decode(raw_path, r.path_, false)) {
    simple_response(400, "400 Bad Request: bad path escape", true);
    rs.close_after = true;
  }
  r.host_ = host_from_url.empty() ? std::string(r.headers_.get("Host")) : std::string(host_from_url);

  bool http11 = r.major_ == 1 && r.minor_ == 1;
  int bad = 0;
  std::string_view why;
  if (!(r.major_ == 1 && (r.minor_ == 0 || r.minor_ == 1))) {
    bad = 505;
    why = "505 HTTP Version Not Supported";
  } else if (http11 && !r.headers_.has("Host")) {
    bad = 400;
    why = "400 Bad Request: missing required Host header";
  } else if (parser.flags & F_TRANSFER_ENCODING && !(parser.flags & F_CHUNKED)) {
    bad = 501;
    why = "501 Not Implemented: unsupported transfer encoding";
  } else if (r.content_length_ && *r.content_length_ > body_limit) {
    bad = 413;
    why = "413 Request Entity Too Large";
  }
  std::string_view expect = r.headers_.get("Expect");
  if (!bad && !expect.empty()) {
    if (iequals(expect, "100-continue") && http11)
      rs.expect_continue = true;
    else {
      bad = 417;
      why = "417 Expectation Failed";
    }
  }
  if (bad || rs.close_after) {
    if (bad) simple_response(bad, why, true);
    r.st_ = nullptr;
    cs->end_request();
    return false;
  }

  rs.head = r.method_ == "HEAD";
  rs.close_after = !llhttp_should_keep_alive(&parser) || srv->shutting_down.load(std::memory_order_acquire);

  // Deadlines: the request's (server timeout, shortened by Request-Timeout) and writes,
  // counted from the request's start (steady_clock is nanotime's CLOCK_MONOTONIC: one
  // clock read serves both).
  int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(rs.start.time_since_epoch()).count();
  rs.deadline_ns = now + opts->handler_timeout.count();
  if (opts->handler_timeout.count() <= 0) rs.deadline_ns = request_state::kNoDeadline;
  std::string_view rt = r.headers_.get("Request-Timeout");
  if (!rt.empty()) {
    uint64_t ms = 0;
    auto [p, ec] = std::from_chars(rt.data(), rt.data() + rt.size(), ms);
    if (ec == std::errc() && p == rt.data() + rt.size() && ms < 1'000'000'000ull)
      rs.deadline_ns = std::min<int64_t>(rs.deadline_ns, now + static_cast<int64_t>(ms) * 1'000'000);
  }
  if (opts->write_timeout.count()) c.set_write_deadline(rs.start + opts->write_timeout);
  if (opts->read_timeout.count() == 0 && headers_done && !message_done) defer_read_deadline({});

  st = &rs;
  uint64_t seq = ++deadline_seq;
  {
    weft::detail::spin_guard g(cs->phase_mu);
    cs->cancel_current = &force_cancel;
    cs->cancel_arg = this;
    active_deadline_seq = seq;
  }
  {
    weft::detail::lock_guard g(deadline_mu);
    deadline_owner = seq;
    active_deadline_ns = rs.deadline_ns;
    arm_deadline_locked(rs.deadline_ns);
  }
  c.watch_hangup(&on_hangup, this);
  if (cs->force_close.load(std::memory_order_acquire)) rs.cancel_ctx(context_errc::canceled);
  // A handler that waits long (sleep10: 10 ms among a thousand connections) comes back
  // to all of this cold; the scheduler fetches it when the goroutine is readied.
  auto [fd_addr, pd_addr] = c.state_addresses();
  weft::set_resume_hints({{this, sizeof *this},
                          {fd_addr, 128},
                          {pd_addr, 128},
                          {cs, sizeof *cs},
                          {w.headers_.f_.data(), w.headers_.f_.capacity() * sizeof(header_field)},
                          {wbuf.data(), std::min<std::size_t>(wbuf.capacity(), 256)}});

  srv->stats.requests.add(1);
  bool threw = false;
  if (r.method_ == "OPTIONS" && r.target_ == "*") {
    w.set_header("Content-Length", "0");  // Go's globalOptionsHandler
    w.write_header(200);
  } else {
    try {
      srv->h(w, r);
    } catch (const std::exception& e) {
      threw = true;
      if (opts->error_log)
        opts->error_log->error("http: panic serving {} {} (route {:?}, goroutine {}): {}", remote, r.path_, r.pattern_,
                               weft::goroutine_id(), e.what());
    } catch (...) {
      threw = true;
      if (opts->error_log)
        opts->error_log->error("http: panic serving {} {} (route {:?}, goroutine {}): unknown exception", remote,
                               r.path_, r.pattern_, weft::goroutine_id());
    }
  }

  // The handler is done (or gave up): no more deadline or hang-up callbacks. The
  // deadline timer stays armed; past this point its firing is stale (on_deadline).
  c.unwatch_hangup();
  {
    weft::detail::spin_guard g(cs->phase_mu);
    cs->cancel_current = nullptr;
    cs->cancel_arg = nullptr;
    active_deadline_seq = 0;
  }
  // Past the deadline with nothing written, the response is the 503's even if the timer
  // has not fired yet: a handler may have seen its context end first (a context made
  // after the deadline is born expired) and returned without writing.
  if (rs.owner.load(std::memory_order_acquire) == request_state::kUnclaimed && rs.past_deadline()) answer_timeout(this);
  helpers.wait();  // a deadline firing in progress, and the 503 writer it spawned
  // As in Go, the request's context is cancelled once the handler has returned (a copy
  // the handler kept, or a child's timer from shorten_deadline, ends now too).
  rs.cancel_ctx(context_errc::canceled);

  bool timed_out = rs.owner.load(std::memory_order_acquire) == request_state::kTimedOut;
  if (timed_out) {
    rs.close_after = true;  // the 503 went out with Connection: close
    w.status_ = 503;
  } else if (threw) {
    if (!rs.headers_out && claim(rs)) {
      // Nothing sent yet: a clean 500 (whatever the handler had buffered is dropped).
      simple_response(500, "Internal Server Error\n", true);
      w.status_ = 500;
    }
    rs.close_after = true;  // a partial response cannot be completed: end the connection
  } else if (body_too_large && !rs.headers_out && rs.body.empty()) {
    // The handler hit the body limit and answered nothing itself.
    simple_response(413, "413 Request Entity Too Large", true);
    w.status_ = 413;
    rs.close_after = true;
  } else {
    finish_response(rs, w);
  }
  auto took = clock::now() - rs.start;
  log_access(r, w, took);
  (r.metrics() ? r.metrics() : &unmatched_route_metrics())->observe(r.method(), w.status() ? w.status() : 200, took);
  st = nullptr;
  r.st_ = nullptr;
  if (cs->force_close.load(std::memory_order_acquire)) rs.close_after = true;
  // Consume what the handler left of the body, so the next request parses.
  if (!rs.close_after && !message_done) drain_body();
  if (!message_done) rs.close_after = true;
  cs->end_request();
  return !rs.close_after;
}

// Closing right after a response while the client may still be sending would make the
// kernel reset the connection and could destroy the response in flight. Shut the write
// side, let the client read, drain what it sends for a moment, then close (Go's
// closeWriteAndWait).
void conn_loop::lingering_close() {
  c.close_write();
  set_read_deadline_now(clock::now() + std::chrono::milliseconds(500));
  char buf[4096];
  for (std::size_t total = 0; total < 256 * 1024;) {
    auto r = c.read(buf, sizeof buf);
    total += r.n;
    if (r.err) break;
  }
  c.close();
}

std::atomic<void (*)()> shed_arming_hook{nullptr};

namespace {

// The readable watch or the idle timer fired. Runs on a scheduler thread; must not
// block. While the shedding goroutine is still arming both, the wakeup is only recorded
// (it will carry on itself); once shed, the first of the two to claim the connection
// starts its next goroutine. Neither touches the loop after its CAS, except the claimer.
void on_wake(conn_loop* l, bool idle) {
  int s = l->shed_state.load(std::memory_order_acquire);
  for (;;) {
    if (s == conn_loop::kArming) {
      int fired = idle ? conn_loop::kFiredIdle : conn_loop::kFiredReadable;
      if (l->shed_state.compare_exchange_weak(s, fired, std::memory_order_acq_rel)) return;
    } else if (s == conn_loop::kShed) {
      if (l->shed_state.compare_exchange_weak(s, conn_loop::kClaimed, std::memory_order_acq_rel)) {
        l->idle_expired = idle;
        weft::go([l] { l->run(); });
        return;
      }
    } else {
      return;  // already fired or claimed: the other one won
    }
  }
}

void on_readable(void* arg) { on_wake(static_cast<conn_loop*>(arg), false); }
void on_idle(weft::detail::timer*, void* arg, uintptr_t) { on_wake(static_cast<conn_loop*>(arg), true); }

}  // namespace

conn_loop::shed_result conn_loop::shed(std::chrono::nanoseconds idle_left) {
  if (srv->shutting_down.load(std::memory_order_acquire)) return shed_result::not_shed;
  // Give back the memory an idle connection does not need.
  rbuf_mem.reset();
  rbuf = nullptr;
  rpos = rlen = 0;
  std::string().swap(wbuf);
  std::string().swap(body_pending);
  std::string().swap(hname);
  std::string().swap(hval);
  std::vector<header_field>().swap(spare_req_fields);
  std::vector<header_field>().swap(spare_resp_fields);
  std::string().swap(spare_body);
  cs->end_request();
  // The request slot belongs to this goroutine's run(): clear it before the loop can
  // change hands, and put it back if it does not.
  request* cur = req;
  req = nullptr;
  shed_state.store(kArming, std::memory_order_relaxed);
  weft::detail::timer_reset(&idle_timer, now_ns() + idle_left.count());
  if (!c.watch_readable(&on_readable, this)) on_readable(this);
  if (auto hook = shed_arming_hook.load(std::memory_order_acquire)) hook();
  int s = kArming;
  // On success this is the last thing we do with the loop: another goroutine owns it.
  if (shed_state.compare_exchange_strong(s, kShed, std::memory_order_acq_rel)) return shed_result::handed_off;
  // Woken while arming: disarm both (waiting out a callback in progress) and go on here.
  weft::detail::timer_stop_sync(&idle_timer);
  c.unwatch_readable();
  shed_state.store(kRunning, std::memory_order_relaxed);
  req = cur;
  return s == kFiredIdle ? shed_result::idle_expired : shed_result::readable;
}

conn_loop::run_result conn_loop::run() {
  if (!started) {
    started = true;
    llhttp_init(&parser, HTTP_REQUEST, &g_settings);
    parser.data = this;
    deadline_timer.f = &on_deadline;
    deadline_timer.arg = this;
    deadline_timer.sync = true;
    idle_timer.f = &on_idle;
    idle_timer.arg = this;
    idle_timer.sync = true;
  } else {
    // Resumed after a shed: make sure the loser of the readable/idle race is done with
    // us before going on.
    weft::detail::timer_stop_sync(&idle_timer);
    c.unwatch_readable();
    shed_state.store(kRunning, std::memory_order_release);
    if (idle_expired) {
      finish(true);
      return run_result::done;
    }
  }
  bool clean = true;
  for (;;) {
    request r;
    r.headers_.f_ = std::move(spare_req_fields);
    req = &r;
    int rc = parse_head();
    // Shed: another goroutine owns the loop now (and may already have set its own req).
    if (rc == 2) return run_result::shed;
    if (rc == 0) break;  // closed, idle timeout, or shut down between requests
    if (rc < 0) {
      clean = false;
      if (header_too_large)
        simple_response(431, "431 Request Header Fields Too Large", true);
      else if (rc == -HPE_INVALID_VERSION)
        simple_response(505, "505 HTTP Version Not Supported", true);
      else if (rc == -HPE_INVALID_TRANSFER_ENCODING && (parser.flags & F_TRANSFER_ENCODING) && !(parser.flags & F_CONTENT_LENGTH))
        simple_response(501, "501 Not Implemented: unsupported transfer encoding", true);
      else if (rc != -1000)  // a read timeout or error mid-request: just close, as Go does
        simple_response(400, std::string("400 Bad Request: ") + llhttp_get_error_reason(&parser), true);
      cs->end_request();
      break;
    }
    bool ok = handle_request();
    keep_fields(spare_req_fields, r.headers_);
    if (!ok) {
      clean = false;
      break;
    }
  }
  req = nullptr;
  finish(clean);
  return run_result::done;
}

void conn_loop::finish(bool clean) {
  cs->end_request();  // a request cut short (bad input, timeout) stops counting as active
  flush();
  if (clean)
    c.close();
  else
    lingering_close();
  if (started) {  // else never armed (a connection accepted as shutdown began)
    weft::detail::timer_stop_sync(&idle_timer);
    {
      weft::detail::lock_guard g(deadline_mu);
      deadline_timer_dead = true;  // a firing in progress must not re-arm it
    }
    weft::detail::timer_stop_sync(&deadline_timer);  // armed past its request
  }
  server::impl* s = srv;
  std::unique_ptr<conn_state> owned(cs);
  {
    std::lock_guard<weft::mutex> l(s->mu);
    if (cs->prev) cs->prev->next = cs->next;
    else s->conns = cs->next;
    if (cs->next) cs->next->prev = cs->prev;
  }
  s->stats.open_conns.add(-1);
  delete this;
  s->live_conns.done();
}

}  // namespace detail

// Starts serving a new connection on the calling goroutine. live_conns was counted by
// the accept loop; finish() uncounts it, on whichever goroutine ends the connection.
void server::impl::serve_conn(net::conn c) {
  auto* cs = new detail::conn_state();
  cs->srv = this;
  cs->c = c;
  {
    std::lock_guard<weft::mutex> l(mu);
    cs->next = conns;
    if (conns) conns->prev = cs;
    conns = cs;
  }
  stats.open_conns.add(1);
  auto* loop = new detail::conn_loop();
  loop->cs = cs;
  loop->srv = this;
  loop->opts = options();
  loop->c = c;
  loop->remote = c.remote_address();
  if (shutting_down.load(std::memory_order_acquire)) {
    loop->finish(true);
    return;
  }
  loop->run();
}

}  // namespace weft::http
